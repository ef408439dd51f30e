import { respond } from '../context.js';
import type { Metrics } from '../metrics.js';

/** GET /metrics: the Prometheus text format. */
export async function metricsResponse(metrics: Metrics): Promise<Response> {
  const m = await metrics.text();
  return respond(200, { 'Content-Type': m.contentType, 'Cache-Control': 'no-store' }, m.body);
}

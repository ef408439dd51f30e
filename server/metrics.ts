/**
 * Prometheus metrics (prom-client, one registry per server, no globals).
 * Requests are counted by route name from the route table, never by raw
 * path, so label cardinality stays bounded. Store figures (blobs, chunks,
 * logical and stored bytes, dedup ratio, sessions, worker queue) are read
 * when scraped, at most once a second.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Store } from '../storage/open-store.js';
import type { GcReport } from '../storage/maintenance/gc.js';

const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'method' | 'status'>;
  private readonly duration: Histogram<'route' | 'method'>;
  private readonly bytesIn: Counter<'route'>;
  private readonly bytesOut: Counter<'route'>;
  readonly deltaSent: Counter;
  readonly deltaFull: Counter;
  private readonly gcRuns: Counter<'dry_run'>;
  private readonly gcChunks: Counter;
  private readonly gcBytes: Counter;
  private readonly gcSeconds: Histogram;
  private readonly verifyProblems: Counter;
  private readonly verifyRuns: Counter<'result'>;
  /** The last gc and verify this process ran (the admin API's status). */
  lastGc: { atMs: number; report: GcReport } | null = null;
  lastVerify: { atMs: number; ok: boolean; problems: number } | null = null;
  private storeSnapshot: { at: number; blobs: number; logical: number; chunks: number; stored: number } | null = null;

  /** false: nothing is counted (--disable-metrics; the benchmark of the metrics' own cost compares against it). */
  readonly enabled: boolean;

  constructor(store: Store, opts: { processMetrics?: boolean; cacheMs?: number; enabled?: boolean } = {}) {
    this.enabled = opts.enabled !== false;
    const r = this.registry;
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: r });
    this.requests = new Counter({ name: 'snapyard_http_requests_total', help: 'HTTP requests by route name, method and status (499: the client went away)', labelNames: ['route', 'method', 'status'], registers: [r] });
    this.duration = new Histogram({ name: 'snapyard_http_request_duration_seconds', help: 'Time from request to the end of the response', labelNames: ['route', 'method'], buckets: DURATION_BUCKETS, registers: [r] });
    this.bytesIn = new Counter({ name: 'snapyard_http_received_bytes_total', help: 'Bytes received (headers and bodies)', labelNames: ['route'], registers: [r] });
    this.bytesOut = new Counter({ name: 'snapyard_http_sent_bytes_total', help: 'Bytes sent (headers and bodies)', labelNames: ['route'], registers: [r] });
    this.deltaSent = new Counter({ name: 'snapyard_delta_sent_bytes_total', help: 'Bytes of delta pulls sent (plans and chunk frames)', registers: [r] });
    this.deltaFull = new Counter({ name: 'snapyard_delta_replaced_bytes_total', help: 'Full size of the blobs delta pulls were planned for (what a whole download would have sent)', registers: [r] });
    this.gcRuns = new Counter({ name: 'snapyard_gc_runs_total', help: 'Garbage collections run', labelNames: ['dry_run'], registers: [r] });
    this.gcChunks = new Counter({ name: 'snapyard_gc_freed_chunks_total', help: 'Chunks freed by gc', registers: [r] });
    this.gcBytes = new Counter({ name: 'snapyard_gc_freed_bytes_total', help: 'Stored bytes freed by gc', registers: [r] });
    this.gcSeconds = new Histogram({ name: 'snapyard_gc_duration_seconds', help: 'Wall time of gc runs', buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 1800], registers: [r] });
    this.verifyRuns = new Counter({ name: 'snapyard_verify_runs_total', help: 'verify runs by result', labelNames: ['result'], registers: [r] });
    this.verifyProblems = new Counter({ name: 'snapyard_verify_errors_total', help: 'Problems verify found (corrupt or missing chunks, broken indexes, missing blobs)', registers: [r] });
    const cacheMs = opts.cacheMs ?? 1000;
    const snap = async () => {
      const now = Date.now();
      if (!this.storeSnapshot || now - this.storeSnapshot.at > cacheMs) {
        const b = await store.meta.blobTotals();
        const c = await store.chunks.stats();
        this.storeSnapshot = { at: now, blobs: b.blobs, logical: b.bytes, chunks: c.chunks, stored: c.stored };
      }
      return this.storeSnapshot;
    };
    const gauge = (name: string, help: string, read: () => number | Promise<number>) =>
      new Gauge({ name, help, registers: [r], async collect() { this.set(await read()); } });
    new Gauge({
      name: 'snapyard_cache_bytes',
      help: 'Estimated bytes each cache holds; together at most snapyard_cache_limit_bytes (serve --cache-memory)',
      labelNames: ['cache'],
      registers: [r],
      collect() {
        for (const u of store.memory.usage()) this.set({ cache: u.name }, u.bytes);
      },
    });
    gauge('snapyard_cache_limit_bytes', 'The memory budget of the caches (serve --cache-memory)', () => store.memory.limitBytes);
    gauge('snapyard_blobs', 'Blobs stored', async () => (await snap()).blobs);
    gauge('snapyard_chunks', 'Chunks stored', async () => (await snap()).chunks);
    gauge('snapyard_logical_bytes', 'Sum of the sizes of the blobs stored', async () => (await snap()).logical);
    gauge('snapyard_stored_bytes', 'Bytes the chunks take on disk (compressed records)', async () => (await snap()).stored);
    gauge('snapyard_dedup_ratio', 'Logical bytes / stored bytes', async () => {
      const s = await snap();
      return s.stored > 0 ? s.logical / s.stored : 0;
    });
    gauge('snapyard_sessions_open', 'Open upload and push sessions', () => store.sessions.open());
    gauge('snapyard_chunk_worker_queue', 'Tasks queued on the chunk worker threads', () => store.chunks.queueDepth());
  }

  /** One finished request (route: the route table's name, or 'unmatched'). */
  observe(route: string, method: string, status: number, seconds: number, bytesIn: number, bytesOut: number): void {
    if (!this.enabled) return;
    this.requests.inc({ route, method, status: String(status) });
    this.duration.observe({ route, method }, seconds);
    if (bytesIn > 0) this.bytesIn.inc({ route }, bytesIn);
    if (bytesOut > 0) this.bytesOut.inc({ route }, bytesOut);
  }

  gc(r: GcReport): void {
    this.lastGc = { atMs: Date.now(), report: r };
    this.gcRuns.inc({ dry_run: String(r.dryRun) });
    if (!r.dryRun) {
      this.gcChunks.inc(r.chunks);
      this.gcBytes.inc(r.storedBytes);
    }
    this.gcSeconds.observe(r.seconds);
  }

  verify(ok: boolean, problems: number): void {
    this.lastVerify = { atMs: Date.now(), ok, problems };
    this.verifyRuns.inc({ result: ok ? 'ok' : 'failed' });
    if (problems > 0) this.verifyProblems.inc(problems);
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/**
 * Admin endpoints for maintenance (docs/admin-api.md, "gc / verify"):
 *   POST /snapyard/v1/_admin/gc      {"dryRun": bool, "graceSeconds": n, "minLive": f}  -> GcReport
 *   POST /snapyard/v1/_admin/verify  {"repair": bool}                                   -> VerifyReport (200 whether or not ok)
 * One maintenance job runs at a time (store.maintenance); pushes and pulls go on.
 */
import { JSON_BODY, needsAdmin } from '../route-table.js';
import { z } from 'zod';
import { respond, type RequestContext } from '../context.js';
import { readLimited } from '../http-util.js';
import { OciError } from '../oci-error.js';
import { collectGarbage, DEFAULT_GRACE_MS } from '../../storage/gc.js';
import { verifyStore } from '../../storage/verify.js';
import { gcRequest, verifyRequest } from '../../storage/protocol/api.js';
import type { AdminRoute } from './types.js';



async function jsonBody<T>(ctx: RequestContext, schema: z.ZodType<T>): Promise<T> {
  const text = (await readLimited(ctx.incoming, 64 * 1024)).toString('utf8').trim();
  let v: unknown = {};
  try {
    if (text) v = JSON.parse(text);
  } catch {
    throw new OciError(400, 'UNSUPPORTED', 'the body is not JSON');
  }
  const r = schema.safeParse(v);
  if (!r.success) throw new OciError(400, 'UNSUPPORTED', `bad request: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

const json = (v: unknown) => respond(200, { 'Content-Type': 'application/json' }, JSON.stringify(v));

export const gcRoute: AdminRoute = {
  name: 'admin.gc',
  method: 'POST',
  pattern: /^\/snapyard\/v1\/_admin\/gc$/,
  needs: needsAdmin,
  bodyLimit: JSON_BODY,
  async handle(ctx, _m, svc) {
    const req = await jsonBody(ctx, gcRequest);
    const store = ctx.store;
    // On a full disk the reserve is given up and gc runs again (disk-reserve.ts); it is made again once gc freed room.
    const report = await store.maintenance.run(() =>
      store.reserve.relieving(() =>
        collectGarbage(store, {
          dryRun: req.dryRun === true,
          graceMs: req.graceSeconds !== undefined ? req.graceSeconds * 1000 : DEFAULT_GRACE_MS,
          ...(req.minLive !== undefined ? { minLive: req.minLive } : {}),
        }),
      ),
    );
    svc.metrics.gc(report);
    return json(report);
  },
};

export const verifyRoute: AdminRoute = {
  name: 'admin.verify',
  method: 'POST',
  pattern: /^\/snapyard\/v1\/_admin\/verify$/,
  needs: needsAdmin,
  bodyLimit: JSON_BODY,
  async handle(ctx, _m, svc) {
    const req = await jsonBody(ctx, verifyRequest);
    const store = ctx.store;
    const report = await store.maintenance.run(() => verifyStore(store, { repair: req.repair === true }));
    svc.metrics.verify(report.ok, report.problems.length);
    return json(report);
  },
};

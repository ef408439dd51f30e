/**
 * Admin endpoints for maintenance (docs/admin-api.md, "gc / verify"):
 *   POST /snapyard/v1/_admin/gc      {"dryRun": bool, "graceSeconds": n, "minLive": f, "maxUnused": f}  -> GcReport
 *   POST /snapyard/v1/_admin/verify  {"repair": bool}                                   -> VerifyReport (200 whether or not ok)
 * One maintenance job runs at a time, on any replica (store.coord.withMaintenance: the
 * maintenance lease; gc checks its fence before each destructive step); pushes and pulls go on.
 */
import { JSON_BODY, needsAdmin } from '../route-table.js';
import { collectGarbage, DEFAULT_GRACE_MS } from '../../storage/maintenance/gc.js';
import { verifyStore } from '../../storage/maintenance/verify.js';
import { gcRequest, verifyRequest } from '../../storage/protocol/api.js';
import type { AdminRoute } from './types.js';
import { json, readBody } from './http.js';

export const gcRoute: AdminRoute = {
  name: 'admin.gc',
  method: 'POST',
  pattern: /^\/snapyard\/v1\/_admin\/gc$/,
  needs: needsAdmin,
  bodyLimit: JSON_BODY,
  async handle(ctx, _m, svc) {
    const req = await readBody(ctx, gcRequest);
    const store = ctx.store;
    // On a full disk the reserve is given up and gc runs again (disk-reserve.ts); it is made again once gc freed room.
    const report = await store.coord.withMaintenance((lease) =>
      store.reserve.relieving(() =>
        collectGarbage(store, {
          fence: () => lease.check(),
          dryRun: req.dryRun === true,
          graceMs: req.graceSeconds !== undefined ? req.graceSeconds * 1000 : DEFAULT_GRACE_MS,
          ...(req.minLive !== undefined ? { minLive: req.minLive } : {}),
          ...(req.maxUnused !== undefined ? { maxUnused: req.maxUnused } : {}),
        }),
      ),
    );
    svc.metrics.gc(report);
    return json(200, report);
  },
};

export const verifyRoute: AdminRoute = {
  name: 'admin.verify',
  method: 'POST',
  pattern: /^\/snapyard\/v1\/_admin\/verify$/,
  needs: needsAdmin,
  bodyLimit: JSON_BODY,
  async handle(ctx, _m, svc) {
    const req = await readBody(ctx, verifyRequest);
    const store = ctx.store;
    const report = await store.coord.withMaintenance(() => verifyStore(store, { repair: req.repair === true }));
    svc.metrics.verify(report.ok, report.problems.length);
    return json(200, report);
  },
};

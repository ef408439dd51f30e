/**
 * Every endpoint of the server, in matching order (docs/auth.md lists them
 * with the access each needs). The OCI distribution API under /v2/, the
 * delta protocol and admin API under /snapyard/v1/, the token endpoint.
 */
import { JSON_BODY, needsCatalog, needsLogin, needsNothing, repo, type Method, type RouteDef, type Services } from '../route-table.js';
import type { RequestContext } from '../context.js';
import type { Need } from '../auth/authenticator.js';
import { respond } from '../context.js';
import { MAX_MANIFEST_BYTES } from '../manifest.js';
import { deleteBlob, getBlob } from './blobs.js';
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from './uploads.js';
import { deleteManifest, getManifest, putManifest } from './manifests.js';
import { listReferrers, listTags } from './discovery.js';
import { listCatalog } from './catalog.js';
import { deltaPlan, sendChunks } from './delta.js';
import { blobManifests, commitPush, missingChunks, uploadChunks } from './push.js';
import { similarChunks } from './push-delta.js';
import { issueToken } from '../auth/token-route.js';
import { healthz, readyz } from '../health.js';
import { metricsResponse } from './metrics-route.js';
import { lifecycleRoutes } from '../admin/lifecycle-routes.js';
import { maintenanceRoutes } from '../admin/maintenance-routes.js';
import { uiRoutes } from '../ui/ui-routes.js';
import type { UiAssets } from '../ui/ui-assets.js';

export interface RouteOptions {
  /** Serve GET /metrics on this port too (false: it has a listener of its own, --metrics-addr). */
  metricsRoute: boolean;
  /** The web page (GET /, /ui/...); null: not served (serve --no-ui). */
  ui?: UiAssets | null;
}

export interface RouteLimits {
  /** The largest blob an upload (or one PATCH of it) may send. */
  maxBlobBytes: number;
  /** The largest body of the delta protocol's upload stream. */
  maxPushUploadBytes: number;
}

type Handler = (ctx: RequestContext, m: RegExpExecArray, svc: Services) => Response | Promise<Response>;

const route = (name: string, method: Method, pattern: RegExp, needs: (m: RegExpExecArray) => Need[], bodyLimit: number, handle: Handler): RouteDef => ({ name, method, pattern, needs, bodyLimit, handle });

const V2 = '^/v2/(.+)';
const V1 = '^/snapyard/v1/(.+)';

export function routeTable(limits: RouteLimits, opts: RouteOptions = { metricsRoute: true }): RouteDef[] {
  const pull = repo('pull');
  const push = repo('pull', 'push');
  const del = repo('delete');
  return [
    // The token endpoint of the Docker/OCI token flow, and the API's base
    route('token', 'GET', /^\/token$/, needsNothing, 0, (ctx, _m, s) => issueToken(s.auth, ctx.url, ctx.headers.get('authorization') ?? undefined)),
    route('healthz', 'GET', /^\/healthz$/, needsNothing, 0, () => healthz()),
    route('readyz', 'GET', /^\/readyz$/, needsNothing, 0, (ctx, _m, s) => readyz(ctx.store, s.readiness)),
    ...(opts.metricsRoute ? [route('metrics', 'GET', /^\/metrics$/, needsNothing, 0, (_ctx, _m, s) => metricsResponse(s.metrics))] : []),
    route('base', 'GET', /^\/v2\/?$/, needsLogin, 0, () => respond(200, { 'Content-Type': 'application/json' }, '{}')),
    route('catalog', 'GET', /^\/v2\/_catalog$/, needsCatalog, 0, (ctx) => listCatalog(ctx, (r) => ctx.mayPull(r))),
    // OCI distribution-spec
    route('upload.start', 'POST', new RegExp(`${V2}/blobs/uploads/?$`), push, limits.maxBlobBytes, (ctx, m) => startUpload(ctx, m[1]!)),
    route('upload.patch', 'PATCH', new RegExp(`${V2}/blobs/uploads/([^/]+)$`), push, limits.maxBlobBytes, (ctx, m) => patchUpload(ctx, m[1]!, m[2]!)),
    route('upload.finish', 'PUT', new RegExp(`${V2}/blobs/uploads/([^/]+)$`), push, limits.maxBlobBytes, (ctx, m) => finishUpload(ctx, m[1]!, m[2]!)),
    route('upload.status', 'GET', new RegExp(`${V2}/blobs/uploads/([^/]+)$`), push, 0, (ctx, m) => uploadStatus(ctx, m[1]!, m[2]!)),
    route('upload.cancel', 'DELETE', new RegExp(`${V2}/blobs/uploads/([^/]+)$`), push, 0, (ctx, m) => cancelUpload(ctx, m[1]!, m[2]!)),
    route('blob.get', 'GET', new RegExp(`${V2}/blobs/([^/]+)$`), pull, 0, (ctx, m) => getBlob(ctx, m[1]!, m[2]!)),
    route('blob.delete', 'DELETE', new RegExp(`${V2}/blobs/([^/]+)$`), del, 0, (ctx, m) => deleteBlob(ctx, m[1]!, m[2]!)),
    route('manifest.get', 'GET', new RegExp(`${V2}/manifests/([^/]+)$`), pull, 0, (ctx, m) => getManifest(ctx, m[1]!, m[2]!)),
    route('manifest.put', 'PUT', new RegExp(`${V2}/manifests/([^/]+)$`), push, MAX_MANIFEST_BYTES, (ctx, m) => putManifest(ctx, m[1]!, m[2]!)),
    route('manifest.delete', 'DELETE', new RegExp(`${V2}/manifests/([^/]+)$`), del, 0, (ctx, m) => deleteManifest(ctx, m[1]!, m[2]!)),
    route('tags.list', 'GET', new RegExp(`${V2}/tags/list/?$`), pull, 0, (ctx, m) => listTags(ctx, m[1]!)),
    route('referrers.list', 'GET', new RegExp(`${V2}/referrers/([^/]+)$`), pull, 0, (ctx, m) => listReferrers(ctx, m[1]!, m[2]!)),
    // The delta protocol (docs/delta-protocol.md)
    route('delta.plan', 'POST', new RegExp(`${V1}/_delta$`), pull, JSON_BODY, (ctx, m, s) => deltaPlan(ctx, s.delta, m[1]!, (n) => s.metrics.deltaFull.inc(n))),
    route('delta.chunks', 'POST', new RegExp(`${V1}/_chunks$`), pull, 8 * 1024 * 1024, (ctx, m, s) => sendChunks(ctx, s.delta, m[1]!)),
    route('push.missing', 'POST', new RegExp(`${V1}/_missing$`), push, 64 * 1024 * 1024, (ctx, m, s) => missingChunks(ctx, s.delta, m[1]!)),
    route('push.upload', 'POST', new RegExp(`${V1}/_upload$`), push, limits.maxPushUploadBytes, (ctx, m, s) => uploadChunks(ctx, s.delta, m[1]!)),
    route('push.similar', 'POST', new RegExp(`${V1}/_similar$`), push, 16 * 1024 * 1024, (ctx, m, s) => similarChunks(ctx, s.delta, m[1]!)),
    route('push.commit', 'POST', new RegExp(`${V1}/_commit$`), push, JSON_BODY, (ctx, m, s) => commitPush(ctx, s.delta, m[1]!)),
    route('blob.manifests', 'GET', new RegExp(`${V1}/_blobs/([^/]+)/manifests$`), pull, 0, (ctx, m) => blobManifests(ctx, m[1]!, m[2]!)),
    // The admin API (docs/admin-api.md)
    ...lifecycleRoutes,
    ...maintenanceRoutes,
    // The web page (docs/ui.md): public shell and assets; its data comes from the admin API above
    ...(opts.ui ? uiRoutes(opts.ui) : []),
  ];
}

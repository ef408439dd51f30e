import { Hono, type Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { Logger } from 'pino';
import { matchRoute, type Route } from './names.js';
import { OciError, toOciError } from './oci-error.js';
import { respond, type RequestContext } from './context.js';
import { deleteBlob, getBlob } from './routes/blobs.js';
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from './routes/uploads.js';
import { deleteManifest, getManifest, putManifest } from './routes/manifests.js';
import { listReferrers, listTags } from './routes/discovery.js';
import type { Store } from '../storage/open-store.js';
import { matchExtRoute, type ExtRoute } from './ext-routes.js';
import { DeltaService } from './delta-service.js';
import { dispatchAdmin, matchAdmin } from './admin/index.js';
import { deltaPlan, sendChunks } from './routes/delta.js';
import { blobManifests, commitPush, missingChunks, uploadChunks } from './routes/push.js';

export interface AppConfig {
  store: Store;
  logger?: Logger;
}

const methodNotAllowed = () => new OciError(405, 'UNSUPPORTED', 'method not allowed on this resource');

function dispatch(ctx: RequestContext, r: Route): Response | Promise<Response> {
  const m = ctx.method;
  switch (r.kind) {
    case 'base':
      if (m === 'GET' || m === 'HEAD') return respond(200, { 'Content-Type': 'application/json' }, m === 'HEAD' ? undefined : '{}');
      break;
    case 'blob':
      if (m === 'GET' || m === 'HEAD') return getBlob(ctx, r.name, r.digest);
      if (m === 'DELETE') return deleteBlob(ctx, r.name, r.digest);
      break;
    case 'uploads':
      if (m === 'POST') return startUpload(ctx, r.name);
      break;
    case 'upload':
      if (m === 'PATCH') return patchUpload(ctx, r.name, r.id);
      if (m === 'PUT') return finishUpload(ctx, r.name, r.id);
      if (m === 'GET') return uploadStatus(ctx, r.name, r.id);
      if (m === 'DELETE') return cancelUpload(ctx, r.name, r.id);
      break;
    case 'manifest':
      if (m === 'GET' || m === 'HEAD') return getManifest(ctx, r.name, r.reference);
      if (m === 'PUT') return putManifest(ctx, r.name, r.reference);
      if (m === 'DELETE') return deleteManifest(ctx, r.name, r.reference);
      break;
    case 'tags':
      if (m === 'GET') return listTags(ctx, r.name);
      break;
    case 'referrers':
      if (m === 'GET') return listReferrers(ctx, r.name, r.digest);
      break;
  }
  throw methodNotAllowed();
}

function dispatchExt(ctx: RequestContext, svc: DeltaService, r: ExtRoute): Response | Promise<Response> {
  const m = ctx.method;
  if (r.kind === 'blob-manifests') {
    if (m === 'GET') return blobManifests(ctx, r.name, r.digest);
    throw methodNotAllowed();
  }
  if (m !== 'POST') throw methodNotAllowed();
  switch (r.kind) {
    case 'delta':
      return deltaPlan(ctx, svc, r.name);
    case 'chunks':
      return sendChunks(ctx, svc, r.name);
    case 'missing':
      return missingChunks(ctx, svc, r.name);
    case 'upload':
      return uploadChunks(ctx, svc, r.name);
    case 'commit':
      return commitPush(ctx, svc, r.name);
  }
}

function errorResponse(e: unknown, method: string, ctx: RequestContext | null, logger?: Logger): Response {
  const err = toOciError(e);
  if (err.status >= 500) logger?.error({ err: e }, 'request failed');
  const headers: Record<string, string> = { 'Content-Type': 'application/json', ...err.headers };
  // A body we did not read keeps the connection busy: close it instead of reading gigabytes.
  if (ctx && !ctx.incoming.complete) {
    headers.Connection = 'close';
    ctx.incoming.resume();
  }
  return respond(err.status, headers, method === 'HEAD' ? undefined : err.body());
}

/** The registry's HTTP application (OCI distribution-spec v1.1 under /v2/). */
export function createApp(cfg: AppConfig): Hono<{ Bindings: HttpBindings }> {
  const app = new Hono<{ Bindings: HttpBindings }>();
  app.use('*', async (c, next) => {
    const t0 = performance.now();
    await next();
    const out = c.env.outgoing;
    const sent = out.headersSent; // streamed straight to the socket (sendStream)
    if (!sent) c.res.headers.set('Docker-Distribution-API-Version', 'registry/2.0');
    cfg.logger?.info({
      method: c.req.method,
      path: c.req.path,
      status: sent ? out.statusCode : c.res.status,
      ms: Math.round((performance.now() - t0) * 10) / 10,
      length: (sent ? out.getHeader('content-length') : c.res.headers.get('content-length')) ?? undefined,
    });
  });
  const delta = new DeltaService(cfg.store);
  const contextOf = (c: Context<{ Bindings: HttpBindings }>): RequestContext => {
    const url = new URL(c.req.url);
    return {
      store: cfg.store,
      method: c.req.method,
      url,
      headers: c.req.raw.headers,
      incoming: c.env.incoming,
      outgoing: c.env.outgoing,
      user: null,
      onStreamError: (e) => cfg.logger?.error({ err: e, path: url.pathname }, 'response cut short'),
    };
  };
  app.all('/snapyard/v1/*', async (c) => {
    let ctx: RequestContext | null = null;
    try {
      ctx = contextOf(c);
      const url = ctx.url;
      const route = matchExtRoute(url.pathname);
      if (route) return await dispatchExt(ctx, delta, route);
      const admin = matchAdmin(ctx.method, url.pathname);
      if (admin === 'method') throw methodNotAllowed();
      if (admin) return await dispatchAdmin(ctx, admin, { delta });
      throw new OciError(404, 'UNSUPPORTED', `no such endpoint: ${url.pathname.slice(0, 200)}`);
    } catch (e) {
      return errorResponse(e, c.req.method, ctx, cfg.logger);
    }
  });
  app.all('/v2/*', async (c) => {
    let ctx: RequestContext | null = null;
    try {
      ctx = contextOf(c);
      const url = ctx.url;
      const route = matchRoute(url.pathname);
      if (!route) throw new OciError(404, 'NAME_UNKNOWN', `no such endpoint: ${url.pathname.slice(0, 200)}`);
      return await dispatch(ctx, route);
    } catch (e) {
      return errorResponse(e, c.req.method, ctx, cfg.logger);
    }
  });
  app.notFound(() => respond(404, { 'Content-Type': 'application/json' }, new OciError(404, 'UNSUPPORTED', 'not found').body()));
  return app;
}

import { Hono } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { Logger } from 'pino';
import { randomUUID } from 'node:crypto';
import { OciError, toOciError } from './oci-error.js';
import { respond, type RequestContext } from './context.js';
import type { Store } from '../storage/open-store.js';
import { Forwarder } from './forward.js';
import { DeltaService } from './delta-service.js';
import { matchRoute, type RouteDef, type Services } from './route-table.js';
import { routeTable, type RouteLimits } from './routes/table.js';
import { Authenticator, type Principal } from './auth/authenticator.js';
import { Metrics } from './metrics.js';
import type { ReadinessOptions } from './health.js';
import { RepoViews } from './admin/repo-view.js';
import type { UiAssets } from './ui/ui-assets.js';
import type { ServerAbout } from './route-table.js';

export interface AppConfig {
  store: Store;
  logger?: Logger;
  /** Authentication and access control; default: none (an open registry). */
  auth?: Authenticator;
  limits?: Partial<RouteLimits>;
  /** Prometheus metrics (default: a registry of the app's own). */
  metrics?: Metrics;
  /** false: GET /metrics is served by a listener of its own (--metrics-addr), not on this port. */
  metricsRoute?: boolean;
  readiness?: ReadinessOptions;
  /** Relays requests of upload sessions another replica holds (forward.ts); default: one of the app's own. */
  forwarder?: Forwarder;
  /** The web page at /ui/ (server/ui/ui-assets.ts); null or absent: not served (serve --no-ui). */
  ui?: UiAssets | null;
  /** What the server runs on (the status page). */
  about?: ServerAbout;
}

export const DEFAULT_ROUTE_LIMITS: RouteLimits = {
  maxBlobBytes: 64 * 1024 ** 3,
  maxPushUploadBytes: 64 * 1024 ** 3,
};

type Env = { Bindings: HttpBindings; Variables: { route?: string; user?: string | null; requestId: string } };

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/** A client that went away: its request is not a server failure. */
function clientGone(ctx: RequestContext | null): boolean {
  return ctx !== null && (ctx.incoming.destroyed || ctx.outgoing.destroyed || ctx.incoming.socket?.destroyed === true);
}

function errorResponse(e: unknown, method: string, ctx: RequestContext | null, logger?: Logger): Response {
  const err = toOciError(e);
  if (err.status >= 500 && !clientGone(ctx)) logger?.error({ err: e }, 'request failed');
  const headers: Record<string, string> = { 'Content-Type': 'application/json', ...err.headers };
  // A body we did not read keeps the connection busy: close it instead of reading gigabytes.
  if (ctx && !ctx.incoming.complete) {
    headers.Connection = 'close';
    ctx.incoming.resume();
  }
  return respond(err.status, headers, method === 'HEAD' ? undefined : err.body());
}

/** 413 before the handler when the declared body is larger than the route allows. */
function checkDeclaredBody(route: RouteDef, headers: Headers): void {
  const v = headers.get('content-length');
  if (v === null) return;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new OciError(400, 'SIZE_INVALID', `invalid Content-Length ${JSON.stringify(v.slice(0, 40))}`);
  if (n > route.bodyLimit) throw new OciError(413, 'SIZE_INVALID', `a body of ${n} bytes exceeds the limit of ${route.bodyLimit} for ${route.name}`);
}

/** The registry's HTTP application: one route table (server/routes/table.ts) behind authentication. */
export function createApp(cfg: AppConfig): Hono<Env> {
  const app = new Hono<Env>();
  const auth = cfg.auth ?? new Authenticator({ htpasswd: null });
  const metrics = cfg.metrics ?? new Metrics(cfg.store);
  const svc: Services = { delta: new DeltaService(cfg.store), auth, metrics, readiness: cfg.readiness ?? {}, views: new RepoViews(), ...(cfg.about ? { about: cfg.about } : {}) };
  const forwarder = cfg.forwarder ?? new Forwarder();
  cfg.store.onClose(() => forwarder.close());
  const table = routeTable({ ...DEFAULT_ROUTE_LIMITS, ...cfg.limits }, { metricsRoute: cfg.metricsRoute !== false, ui: cfg.ui ?? null });

  app.use('*', async (c, next) => {
    const t0 = performance.now();
    const given = c.req.header('x-request-id');
    const requestId = given && REQUEST_ID_RE.test(given) ? given : randomUUID();
    c.set('requestId', requestId);
    const sock = c.env.incoming.socket;
    const read0 = sock?.bytesRead ?? 0;
    const written0 = sock?.bytesWritten ?? 0;
    await next();
    const out = c.env.outgoing;
    const sent = out.headersSent; // streamed straight to the socket (sendStream)
    if (!sent) {
      c.res.headers.set('Docker-Distribution-API-Version', 'registry/2.0');
      c.res.headers.set('X-Request-Id', requestId);
    }
    // A streamed response cut short (client gone, or a failure half-way) is not logged as a whole one.
    const aborted = sent ? !out.writableEnded : c.env.incoming.destroyed && !c.env.incoming.complete;
    const status = sent ? out.statusCode : c.res.status;
    const seconds = (performance.now() - t0) / 1000;
    const route = c.get('route') ?? 'unmatched';
    // Sequential on a connection, so the socket's counters moved by this request (the response's last bytes may still be queued).
    const bytesIn = Math.max(0, (sock?.bytesRead ?? 0) - read0);
    const bytesOut = Math.max(0, (sock?.bytesWritten ?? 0) - written0) + (sent ? 0 : Number(c.res.headers.get('content-length') ?? 0));
    metrics.observe(route, c.req.method, aborted ? 499 : status, seconds, bytesIn, bytesOut);
    if (route === 'delta.plan' || route === 'delta.chunks') metrics.deltaSent.inc(bytesOut);
    cfg.logger?.info({
      id: requestId,
      route: c.get('route') ?? null,
      method: c.req.method,
      path: c.req.path,
      user: c.get('user') ?? null,
      status: aborted ? 499 : status,
      ...(aborted ? { aborted: true, statusSent: status } : {}),
      ms: Math.round((performance.now() - t0) * 10) / 10,
      length: (sent ? out.getHeader('content-length') : c.res.headers.get('content-length')) ?? undefined,
    });
  });

  app.all('*', async (c) => {
    let ctx: RequestContext | null = null;
    try {
      const url = new URL(c.req.url);
      const hit = matchRoute(table, c.req.method, url.pathname);
      if (hit === 'method') throw new OciError(405, 'UNSUPPORTED', 'method not allowed on this resource');
      if (hit === null) {
        const code = url.pathname.startsWith('/v2/') ? 'NAME_UNKNOWN' : 'UNSUPPORTED';
        throw new OciError(404, code, `no such endpoint: ${url.pathname.slice(0, 200)}`);
      }
      const { route, m } = hit;
      c.set('route', route.name);
      const needs = route.needs(m);
      checkDeclaredBody(route, c.req.raw.headers);
      const principal: Principal = await auth.identify(c.req.header('authorization'), url);
      c.set('user', principal.user);
      auth.authorize(principal, needs, url);
      ctx = {
        store: cfg.store,
        method: c.req.method,
        url,
        headers: c.req.raw.headers,
        incoming: c.env.incoming,
        outgoing: c.env.outgoing,
        user: principal.user,
        can: (repo, action) => auth.can(principal, repo, action),
        mayPull: (repo) => auth.mayPull(principal, repo),
        forward: (base) => forwarder.forward(ctx!, base),
        onStreamError: (e) => {
          if (!clientGone(ctx)) cfg.logger?.error({ err: e, route: route.name }, 'response cut short');
        },
      };
      return await route.handle(ctx, m, svc);
    } catch (e) {
      if (ctx === null) ctx = { incoming: c.env.incoming, outgoing: c.env.outgoing } as RequestContext;
      return errorResponse(e, c.req.method, ctx, cfg.logger);
    }
  });
  return app;
}

/**
 * The one route table: every endpoint the server answers, each with a stable
 * name (logs and metrics use it, never the raw path), the method, the path
 * pattern, what access it needs ({resource, action}, read by access control)
 * and a cap on the body it may send. server/routes/table.ts lists them.
 */
import type { RequestContext } from './context.js';
import type { DeltaService } from './delta-service.js';
import type { Authenticator, Need } from './auth/authenticator.js';
import type { RepoAction } from './auth/access.js';
import { checkName } from './names.js';
import type { Metrics } from './metrics.js';
import type { ReadinessOptions } from './health.js';
import type { RepoViews } from './admin/repo-view.js';

/** What the server runs on, for the status page (no credentials: the store's bucket and path, the metadata kind). */
export interface ServerAbout {
  store: string;
  metadata: string;
}

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** What handlers may use besides the request context. */
export interface Services {
  delta: DeltaService;
  auth: Authenticator;
  metrics: Metrics;
  readiness: ReadinessOptions;
  /** The web page's repository views (admin/repo-view.ts): computed once per state of a repository. */
  views: RepoViews;
  about?: ServerAbout;
}

export interface RouteDef {
  /** Stable and bounded: e.g. `blob.get`. */
  name: string;
  /** GET routes answer HEAD too. */
  method: Method;
  pattern: RegExp;
  /** What the caller needs, from the path (repository names are validated here, before anything else). */
  needs(m: RegExpExecArray): Need[];
  /** A declared Content-Length above this is refused (413) before the handler runs; handlers cap streamed bodies too. */
  bodyLimit: number;
  handle(ctx: RequestContext, m: RegExpExecArray, svc: Services): Response | Promise<Response>;
}

export type RouteMatch = { route: RouteDef; m: RegExpExecArray };

/** The route for a request; 'method' when only the method differs (405); null when none (404). */
export function matchRoute(table: readonly RouteDef[], method: string, path: string): RouteMatch | 'method' | null {
  let methodMismatch = false;
  for (const route of table) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    if (route.method === method || (route.method === 'GET' && method === 'HEAD')) return { route, m };
    methodMismatch = true;
  }
  return methodMismatch ? 'method' : null;
}

/** Needs access to the repository named by the pattern's first group. */
export function repo(...actions: RepoAction[]): (m: RegExpExecArray) => Need[] {
  return (m) => [{ type: 'repository', name: checkName(m[1]!), actions }];
}

export const needsAdmin = (): Need[] => [{ type: 'registry', name: 'admin', actions: ['*'] }];
export const needsCatalog = (): Need[] => [{ type: 'registry', name: 'catalog', actions: ['*'] }];
export const needsLogin = (): Need[] => [{ type: 'login' }];
export const needsNothing = (): Need[] => [{ type: 'public' }];

/** Small JSON request bodies (admin and delta requests). */
export const JSON_BODY = 64 * 1024;

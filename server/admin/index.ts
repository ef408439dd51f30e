import type { RequestContext } from '../context.js';
import { lifecycleRoutes } from './lifecycle-routes.js';
import { maintenanceRoutes } from './maintenance-routes.js';
import type { AdminRoute, AdminServices } from './types.js';

const ROUTES: AdminRoute[] = [...lifecycleRoutes, ...maintenanceRoutes];

/** The admin route for this request, or null (then: 404, or 405 if only the method differs). */
export function matchAdmin(method: string, path: string): { route: AdminRoute; m: RegExpExecArray } | 'method' | null {
  let methodMismatch = false;
  for (const route of ROUTES) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    if (route.method === method || (route.method === 'GET' && method === 'HEAD')) return { route, m };
    methodMismatch = true;
  }
  return methodMismatch ? 'method' : null;
}

export function dispatchAdmin(ctx: RequestContext, hit: { route: AdminRoute; m: RegExpExecArray }, svc: AdminServices): Response | Promise<Response> {
  return hit.route.handle(ctx, hit.m, svc);
}

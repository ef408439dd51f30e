import type { RouteDef, Services } from '../route-table.js';

/**
 * An admin endpoint (snapshot lifecycle, issue 4): an entry of the route
 * table (server/route-table.ts) under /snapyard/v1/. Names captured from
 * paths are checked by the route's `needs` before the handler runs.
 */
export type AdminRoute = RouteDef;

/** What admin handlers may use besides the request context's store. */
export type AdminServices = Services;

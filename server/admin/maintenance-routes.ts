import type { AdminRoute } from './types.js';
import { gcRoute, verifyRoute } from './gc-route.js';

/** GC, verify and repair, upload expiry (issue 4). */
export const maintenanceRoutes: AdminRoute[] = [gcRoute, verifyRoute];

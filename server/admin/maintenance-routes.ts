import type { AdminRoute } from './types.js';

/** GC, verify and repair, upload expiry (issue 4). */
export const maintenanceRoutes: AdminRoute[] = [];

import type { AdminRoute } from './types.js';

/** Tags, history, rollback, listing, removal, prune, stats (issue 4). */
export const lifecycleRoutes: AdminRoute[] = [];

import type { AdminRoute } from './types.js';
import { tagRoutes } from './tag-routes.js';
import { listingRoutes } from './listing-routes.js';
import { removalRoutes } from './removal-routes.js';
import { statsRoutes } from './stats-routes.js';
import { viewRoutes } from './view-routes.js';
import { snapshotRoute } from './snapshot-route.js';
import { statusRoutes } from './status-routes.js';

/** Tags, history, rollback, listing, removal, prune, stats (issue 4), the web page's views and status (issue 14); docs/admin-api.md. */
export const lifecycleRoutes: AdminRoute[] = [...tagRoutes, ...listingRoutes, ...removalRoutes, ...statsRoutes, ...viewRoutes, snapshotRoute, ...statusRoutes];

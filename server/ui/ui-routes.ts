/**
 * The web page's routes (docs/ui.md): public, like the token endpoint (the
 * page holds no data; everything it shows comes from the admin API, which
 * checks the caller's access). GET / redirects to /ui/.
 */
import { needsNothing, type RouteDef } from '../route-table.js';
import { respond } from '../context.js';
import type { UiAssets } from './ui-assets.js';

export function uiRoutes(ui: UiAssets): RouteDef[] {
  const get = (name: string, pattern: RegExp, handle: RouteDef['handle']): RouteDef => ({ name, method: 'GET', pattern, needs: needsNothing, bodyLimit: 0, handle });
  return [
    get('ui.root', /^\/$/, () => respond(302, { Location: '/ui/' })),
    get('ui.asset', /^\/ui\/assets\/([^/]+)$/, (ctx, m) => ui.asset(m[1]!, ctx.headers)),
    get('ui.page', /^\/ui(\/.*)?$/, (ctx, m) => (m[1] === undefined ? respond(301, { Location: '/ui/' }) : ui.shell(ctx.headers))),
  ];
}

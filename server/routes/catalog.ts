/**
 * GET /v2/_catalog?n=&last=: the repositories the caller may pull, in
 * lexical order, `{"repositories":[...]}`, paginated as the distribution
 * API does: at most n names after `last` (exclusive), and when more follow a
 * `Link: </v2/_catalog?n=N&last=NAME>; rel="next"` header (RFC 5988).
 * Without n a page holds DEFAULT_PAGE names; n is capped at MAX_PAGE.
 * Names the caller may not pull are never listed nor counted, so pages are
 * the same whatever else the registry holds.
 */
import { OciError } from '../oci-error.js';
import { respond, type RequestContext } from '../context.js';

export const DEFAULT_PAGE = 1000;
export const MAX_PAGE = 10_000;

function pageSize(raw: string | null): number {
  if (raw === null || raw === '') return DEFAULT_PAGE;
  if (!/^\d{1,9}$/.test(raw)) throw new OciError(400, 'UNSUPPORTED', `invalid n ${JSON.stringify(raw.slice(0, 40))}: a count from 0 to ${MAX_PAGE} is expected`);
  return Math.min(Number(raw), MAX_PAGE);
}

export async function listCatalog(ctx: RequestContext, mayPull: (repo: string) => boolean): Promise<Response> {
  const q = ctx.url.searchParams;
  const n = pageSize(q.get('n'));
  const last = q.get('last') ?? '';
  const page: string[] = [];
  let more = false;
  if (n > 0) {
    // listRepos is in byte order (SQLite's BINARY collation); names are ASCII, so this is also JS string order.
    for (const name of await ctx.store.meta.listRepos()) {
      if (name <= last || !mayPull(name)) continue;
      if (page.length === n) {
        more = true;
        break;
      }
      page.push(name);
    }
  }
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (more) headers.Link = `</v2/_catalog?n=${n}&last=${encodeURIComponent(page[page.length - 1]!)}>; rel="next"`;
  return respond(200, headers, JSON.stringify({ repositories: page }));
}

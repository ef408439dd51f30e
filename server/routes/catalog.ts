import { respond, type RequestContext } from '../context.js';

/** GET /v2/_catalog (placeholder until the paginated version lands): the repositories the caller may pull. */
export function listCatalog(ctx: RequestContext, mayPull: (repo: string) => boolean): Response {
  const repositories = ctx.store.meta.repoSummaries().map((r) => r.name).filter(mayPull).sort();
  return respond(200, { 'Content-Type': 'application/json' }, JSON.stringify({ repositories }));
}

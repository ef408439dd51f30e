/** Listing through the admin API: repositories, and a repository's snapshots (`snapyard ls`). */
import { needsCatalog, repo } from '../route-table.js';
import type { RequestContext } from '../context.js';
import type { AdminRoute } from './types.js';
import { iso, json, NAME, repoOf } from './http.js';
import { imageFacts, lineageOf, storedSizes, sumOf } from './snapshots.js';

/** GET /snapyard/v1/_admin/repositories */
async function repositories(ctx: RequestContext): Promise<Response> {
  const repos = (await ctx.store.meta.repoSummaries()).filter((r) => ctx.mayPull(r.name)).map((r) => ({ name: r.name, created: iso(r.createdMs), snapshots: r.manifests, tags: r.tags }));
  return json(200, { repositories: repos });
}

/** GET /snapyard/v1/<name>/_snapshots: every manifest, newest first, with its tags, sizes and lineage. */
async function snapshots(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const meta = ctx.store.meta;
  const tagsOf = new Map<string, string[]>();
  for (const t of await meta.tagRows(repo)) tagsOf.set(t.digest, [...(tagsOf.get(t.digest) ?? []), t.tag]);
  const out = [];
  for (const man of await meta.listManifests(repo)) {
    const f = await imageFacts(ctx.store, man);
    const sizes = await storedSizes(ctx.store, f.chunks.keys());
    out.push({
      digest: man.digest,
      mediaType: man.mediaType,
      tags: tagsOf.get(man.digest) ?? [],
      created: iso(man.createdMs),
      blob: f.blob,
      size: f.size,
      layout: f.layout,
      virtualSize: f.virtualSize,
      storedBytes: f.blob ? sumOf(sizes, f.chunks.keys()) : null,
      indexDigest: f.indexDigest,
      base: lineageOf(man),
    });
  }
  return json(200, { repository: repo, snapshots: out });
}

export const listingRoutes: AdminRoute[] = [
  { name: 'admin.repositories', method: 'GET', pattern: /^\/snapyard\/v1\/_admin\/repositories$/, needs: needsCatalog, bodyLimit: 0, handle: repositories },
  { name: 'admin.snapshots', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_snapshots$`), needs: repo('pull'), bodyLimit: 0, handle: snapshots },
];

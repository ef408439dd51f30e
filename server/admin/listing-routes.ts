/** Listing through the admin API: repositories, and a repository's snapshots (`snapyard ls`). */
import { z } from 'zod';
import { needsCatalog, repo, type Services } from '../route-table.js';
import { readQuery } from './query.js';
import { dedupRatio } from './repo-view.js';
import type { RequestContext } from '../context.js';
import type { AdminRoute } from './types.js';
import { iso, json, NAME, repoOf } from './http.js';
import { imageFacts, lineageOf, storedSizes, sumOf } from './snapshots.js';

const reposQuery = z.object({ offset: z.coerce.number().int().min(0).default(0), n: z.coerce.number().int().min(1).max(500).optional(), stats: z.enum(['true', 'false']).optional() }).strict();

/**
 * GET /snapyard/v1/_admin/repositories[?offset=&n=&stats=true]: by name; a page of them with `total` when n is given;
 * with stats, each with logicalBytes, storedBytes, dedupRatio (server/admin/repo-view.ts, computed once per state of a repository).
 */
async function repositories(ctx: RequestContext, _m: RegExpExecArray, svc: Services): Promise<Response> {
  const q = readQuery(ctx, reposQuery);
  const all = (await ctx.store.meta.repoSummaries()).filter((r) => ctx.mayPull(r.name)).sort((a, b) => (a.name < b.name ? -1 : 1));
  const shown = all.slice(q.offset, q.n === undefined ? undefined : q.offset + q.n);
  const repos = await Promise.all(shown.map(async (r) => {
    const row = { name: r.name, created: iso(r.createdMs), snapshots: r.manifests, tags: r.tags };
    if (q.stats !== 'true') return row;
    const v = await svc.views.view(ctx.store, r.name);
    return { ...row, logicalBytes: v.logicalBytes, storedBytes: v.storedBytes, dedupRatio: dedupRatio(v.logicalBytes, v.storedBytes) };
  }));
  return json(200, { total: all.length, offset: q.offset, repositories: repos });
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

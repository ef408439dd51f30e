/**
 * The web page's repository views through the admin API (docs/admin-api.md,
 * "Views"): a repository's overview (sizes, dedup, growth), its tags as
 * versions grouped by family with sizes and deltas, and its lineage graph.
 * Sorted and paginated here; sizes come from RepoViews (computed once per
 * state of the repository), deltas from its pair cache.
 */
import { z } from 'zod';
import { repo as repoNeeds } from '../route-table.js';
import type { RequestContext } from '../context.js';
import type { Services } from '../route-table.js';
import type { Digest } from '../../storage/digest.js';
import type { ManifestSummary } from '../../storage/meta/metadata.js';
import type { AdminRoute } from './types.js';
import { iso, json, NAME, repoOf } from './http.js';
import { page, pageQuery, readQuery } from './query.js';
import { dedupRatio, type RepoView } from './repo-view.js';
import { parseVersionTag } from './stats-routes.js';

const versionsQuery = z.object({ ...pageQuery(50), sort: z.enum(['family', 'created', 'updated', 'size']).default('family'), family: z.string().max(256).optional() }).strict();
const lineageQuery = z.object({ n: z.coerce.number().int().min(1).max(2000).default(500) }).strict();

interface TagItem {
  tag: string;
  family: string;
  version: number | null;
  m: ManifestSummary;
  updatedMs: number;
}

/** The tags of a repository with their family and version (`games-v2` -> games, 2; a tag without a version is a family of its own). */
async function tagItems(ctx: RequestContext, repo: string, v: RepoView): Promise<TagItem[]> {
  const byDigest = new Map(v.manifests.map((m) => [m.digest, m]));
  const out: TagItem[] = [];
  for (const t of await ctx.store.meta.tagRows(repo)) {
    const m = byDigest.get(t.digest);
    if (!m) continue;
    const pv = parseVersionTag(t.tag);
    out.push({ tag: t.tag, family: pv?.variant ?? t.tag, version: pv?.version ?? null, m, updatedMs: t.updatedMs });
  }
  return out;
}

const byFamily = (a: TagItem, b: TagItem) => (a.family < b.family ? -1 : a.family > b.family ? 1 : (a.version ?? -1) - (b.version ?? -1) || (a.tag < b.tag ? -1 : 1));

/** The manifest a snapshot was built on: its OCI subject, else the image whose blob is its recorded base. */
function baseOf(m: ManifestSummary, v: RepoView, byBlob: Map<string, ManifestSummary>): ManifestSummary | null {
  if (m.subject) return v.manifests.find((x) => x.digest === m.subject) ?? null;
  return m.baseBlob ? (byBlob.get(m.baseBlob) ?? null) : null;
}

function blobOwners(v: RepoView): Map<string, ManifestSummary> {
  const out = new Map<string, ManifestSummary>();
  for (const m of [...v.manifests].sort((a, b) => a.createdMs - b.createdMs)) if (m.imageBlob && !out.has(m.imageBlob)) out.set(m.imageBlob, m);
  return out;
}

function tagsByDigest(items: TagItem[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const t of items) out.set(t.m.digest, [...(out.get(t.m.digest) ?? []), t.tag]);
  return out;
}

/** GET /snapyard/v1/<name>/_overview */
async function overview(ctx: RequestContext, m: RegExpExecArray, svc: Services): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const v = await svc.views.view(ctx.store, repo);
  // At most ~400 points: enough for a plot, small whatever the repository's size.
  const step = Math.max(1, Math.ceil(v.growth.length / 400));
  const growth = v.growth.filter((_, i) => i % step === 0 || i === v.growth.length - 1).map((g) => ({ time: iso(g.time), logicalBytes: g.logicalBytes, storedBytes: g.storedBytes }));
  const tags = (await ctx.store.meta.tagRows(repo)).length;
  return json(200, { repository: repo, manifests: v.manifests.length, snapshots: v.rows.size, tags, logicalBytes: v.logicalBytes, storedBytes: v.storedBytes, dedupRatio: dedupRatio(v.logicalBytes, v.storedBytes), growth });
}

/** GET /snapyard/v1/<name>/_versions?sort=family|created|updated|size&offset=&n=&family= */
async function versions(ctx: RequestContext, m: RegExpExecArray, svc: Services): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const q = readQuery(ctx, versionsQuery);
  const v = await svc.views.view(ctx.store, repo);
  const all = (await tagItems(ctx, repo, v)).sort(byFamily);
  // The previous version of each tag in its family (from the whole list, so a page's first row has its delta too).
  const previous = new Map<string, TagItem>();
  all.forEach((t, i) => {
    const p = all[i - 1];
    if (p && p.family === t.family && t.version !== null && p.version !== null) previous.set(t.tag, p);
  });
  let list = q.family !== undefined ? all.filter((t) => t.family === q.family) : all;
  const size = (t: TagItem) => v.rows.get(t.m.digest)?.size ?? 0;
  if (q.sort === 'created') list = [...list].sort((a, b) => b.m.createdMs - a.m.createdMs || (a.tag < b.tag ? -1 : 1));
  if (q.sort === 'updated') list = [...list].sort((a, b) => b.updatedMs - a.updatedMs || (a.tag < b.tag ? -1 : 1));
  if (q.sort === 'size') list = [...list].sort((a, b) => size(b) - size(a) || (a.tag < b.tag ? -1 : 1));
  const p = page(list, q);
  const owners = blobOwners(v);
  const tagsOf = tagsByDigest(all);
  const items = await Promise.all(p.items.map(async (t) => {
    const row = v.rows.get(t.m.digest);
    const prev = previous.get(t.tag) ?? null;
    const base = baseOf(t.m, v, owners);
    return {
      tag: t.tag,
      family: t.family,
      version: t.version,
      digest: t.m.digest,
      created: iso(t.m.createdMs),
      updated: iso(t.updatedMs),
      layout: row?.layout ?? null,
      virtualSize: row?.virtualSize ?? null,
      size: row?.size ?? null,
      storedBytes: row?.storedBytes ?? null,
      uniqueBytes: row?.uniqueBytes ?? null,
      base: base ? { digest: base.digest, tags: tagsOf.get(base.digest) ?? [] } : null,
      previous: prev ? { tag: prev.tag, digest: prev.m.digest } : null,
      deltaBytes: prev ? await svc.views.delta(ctx.store, prev.m, t.m) : null,
    };
  }));
  return json(200, { repository: repo, sort: q.sort, ...p, items });
}

/** GET /snapyard/v1/<name>/_lineage?n=: snapshots (newest n) and their edges: base (subject or recorded base blob) and version (previous version of a family), each with its delta. */
async function lineage(ctx: RequestContext, m: RegExpExecArray, svc: Services): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const q = readQuery(ctx, lineageQuery);
  const v = await svc.views.view(ctx.store, repo);
  const items = (await tagItems(ctx, repo, v)).sort(byFamily);
  const tagsOf = tagsByDigest(items);
  const nodes = [...v.manifests].filter((x) => x.imageBlob !== null).sort((a, b) => b.createdMs - a.createdMs).slice(0, q.n);
  const inGraph = new Set<string>(nodes.map((x) => x.digest));
  const owners = blobOwners(v);
  const edges: Array<{ from: Digest; to: Digest; kind: 'base' | 'version'; deltaBytes: number | null }> = [];
  const seen = new Set<string>();
  const add = async (from: ManifestSummary, to: ManifestSummary, kind: 'base' | 'version') => {
    const k = `${from.digest}>${to.digest}`;
    if (from.digest === to.digest || seen.has(k) || !inGraph.has(from.digest) || !inGraph.has(to.digest)) return;
    seen.add(k);
    edges.push({ from: from.digest, to: to.digest, kind, deltaBytes: await svc.views.delta(ctx.store, from, to) });
  };
  for (const n of nodes) {
    const b = baseOf(n, v, owners);
    if (b) await add(b, n, 'base');
  }
  for (let i = 1; i < items.length; i++) {
    const a = items[i - 1]!;
    const b = items[i]!;
    if (a.family === b.family && a.version !== null && b.version !== null) await add(a.m, b.m, 'version');
  }
  return json(200, {
    repository: repo,
    total: v.rows.size,
    nodes: nodes.map((x) => ({ digest: x.digest, tags: tagsOf.get(x.digest) ?? [], created: iso(x.createdMs), size: v.rows.get(x.digest)?.size ?? null, storedBytes: v.rows.get(x.digest)?.storedBytes ?? null })),
    edges,
  });
}

export const viewRoutes: AdminRoute[] = [
  { name: 'admin.overview', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_overview$`), needs: repoNeeds('pull'), bodyLimit: 0, handle: overview },
  { name: 'admin.versions', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_versions$`), needs: repoNeeds('pull'), bodyLimit: 0, handle: versions },
  { name: 'admin.lineage', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_lineage$`), needs: repoNeeds('pull'), bodyLimit: 0, handle: lineage },
];

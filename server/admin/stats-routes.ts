/**
 * Storage statistics through the admin API (`snapyard stats`). Definitions
 * (docs/admin-api.md): logical bytes = sum of the image sizes of the
 * snapshots; stored bytes = stored size (compressed records in the chunk
 * store) of the distinct chunks those images reference, index chunks
 * included, each counted once; dedup ratio = logical / stored. A snapshot's
 * unique bytes: stored bytes of its chunks no other snapshot of the
 * repository references. Variants and versions come from tag names
 * (`<variant>-v<N>`, see parseVersionTag); a version's delta is the stored
 * bytes of its chunks that the previous version does not reference.
 */
import { needsAdmin, repo } from '../route-table.js';
import type { RequestContext } from '../context.js';
import type { Digest } from '../../storage/digest.js';
import type { Store } from '../../storage/open-store.js';
import type { AdminRoute } from './types.js';
import { json, NAME, repoOf } from './http.js';
import { imageFacts, storedSizes, sumOf, type ImageFacts } from './snapshots.js';

/** `games-v2`, `games_v2`, `games.2`, `games-2` -> variant "games", version 2; null for other tags. */
export function parseVersionTag(tag: string): { variant: string; version: number } | null {
  const m = /^(.+?)[-_.]v?(\d+)$/i.exec(tag);
  return m ? { variant: m[1]!, version: Number(m[2]) } : null;
}

const ratio = (logical: number, stored: number): number | null => (stored > 0 ? Math.round((logical / stored) * 1000) / 1000 : null);

interface RepoFacts {
  snapshots: Array<{ digest: Digest; tags: string[]; facts: ImageFacts }>;
  sizes: Map<string, number>;
}

async function repoFacts(store: Store, repo: string): Promise<RepoFacts> {
  const tagsOf = new Map<string, string[]>();
  for (const t of await store.meta.tagRows(repo)) tagsOf.set(t.digest, [...(tagsOf.get(t.digest) ?? []), t.tag]);
  const snapshots = [];
  const all = new Set<string>();
  for (const m of await store.meta.listManifests(repo)) {
    const facts = await imageFacts(store, m);
    if (!facts.blob || facts.size === null) continue;
    snapshots.push({ digest: m.digest, tags: tagsOf.get(m.digest) ?? [], facts });
    for (const k of facts.chunks.keys()) all.add(k);
  }
  return { snapshots, sizes: await storedSizes(store, all) };
}

function summary(f: RepoFacts) {
  const logicalBytes = f.snapshots.reduce((n, s) => n + s.facts.size!, 0);
  const storedBytes = sumOf(f.sizes, f.sizes.keys());
  return { snapshots: f.snapshots.length, logicalBytes, storedBytes, dedupRatio: ratio(logicalBytes, storedBytes) };
}

function variants(f: RepoFacts) {
  const byVariant = new Map<string, Array<{ tag: string; version: number; digest: Digest; chunks: Map<string, number> }>>();
  for (const s of f.snapshots) {
    for (const tag of s.tags) {
      const v = parseVersionTag(tag);
      if (v) byVariant.set(v.variant, [...(byVariant.get(v.variant) ?? []), { tag, version: v.version, digest: s.digest, chunks: s.facts.chunks }]);
    }
  }
  return [...byVariant].sort(([a], [b]) => (a < b ? -1 : 1)).map(([variant, vs]) => {
    vs.sort((a, b) => a.version - b.version || (a.tag < b.tag ? -1 : 1));
    const deltas = vs.slice(1).map((to, i) => {
      const from = vs[i]!;
      const bytes = sumOf(f.sizes, [...to.chunks.keys()].filter((k) => !from.chunks.has(k)));
      return { from: from.tag, to: to.tag, bytes };
    });
    return { variant, versions: vs.map((v) => ({ tag: v.tag, version: v.version, digest: v.digest })), deltas };
  });
}

/** GET /snapyard/v1/<name>/_stats */
async function repoStats(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const f = await repoFacts(ctx.store, repo);
  const refs = new Map<string, number>();
  for (const s of f.snapshots) for (const k of s.facts.chunks.keys()) refs.set(k, (refs.get(k) ?? 0) + 1);
  const perSnapshot = f.snapshots.map((s) => ({
    digest: s.digest,
    tags: s.tags,
    size: s.facts.size!,
    storedBytes: sumOf(f.sizes, s.facts.chunks.keys()),
    uniqueBytes: sumOf(f.sizes, [...s.facts.chunks.keys()].filter((k) => refs.get(k) === 1)),
  }));
  return json(200, { repository: repo, ...summary(f), perSnapshot, variants: variants(f) });
}

/** GET /snapyard/v1/_admin/stats: per repository, and over the whole registry (chunks shared across repositories counted once). */
async function registryStats(ctx: RequestContext): Promise<Response> {
  const repositories = [];
  const union = new Map<string, number>();
  let logicalBytes = 0;
  for (const repo of await ctx.store.meta.listRepos()) {
    const f = await repoFacts(ctx.store, repo);
    const s = summary(f);
    logicalBytes += s.logicalBytes;
    for (const [k, n] of f.sizes) union.set(k, n);
    repositories.push({ repository: repo, ...s });
  }
  const storedBytes = sumOf(union, union.keys());
  const st = await ctx.store.chunks.stats();
  return json(200, {
    logicalBytes,
    storedBytes,
    dedupRatio: ratio(logicalBytes, storedBytes),
    store: { chunks: st.chunks, storedBytes: st.stored, rawBytes: st.raw },
    repositories,
  });
}

export const statsRoutes: AdminRoute[] = [
  { name: 'admin.stats', method: 'GET', pattern: /^\/snapyard\/v1\/_admin\/stats$/, needs: needsAdmin, bodyLimit: 0, handle: registryStats },
  { name: 'admin.repo-stats', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_stats$`), needs: repo('pull'), bodyLimit: 0, handle: repoStats },
];

/**
 * What the web page's repository views need, computed once per state of a
 * repository and kept (the admin API's `_overview`, `_versions`, `_lineage`):
 * per snapshot its image size, virtual size, stored and unique bytes; the
 * repository's logical and stored bytes and their growth over time; and the
 * delta between two images (the definition of `snapyard stats`, cached per
 * pair of image blobs, which never change). A repository's state is the set
 * of its manifests: a push or a removal makes the next request compute it
 * again; requests in between read the cache (listing the manifests is one
 * metadata query, no chunk index is read).
 */
import { createHash } from 'node:crypto';
import type { Digest } from '../../storage/digest.js';
import type { ManifestSummary } from '../../storage/meta/metadata.js';
import type { Store } from '../../storage/open-store.js';
import { imageFacts, storedSizes, sumOf } from './snapshots.js';

export interface SnapshotRow {
  digest: Digest;
  blob: Digest;
  createdMs: number;
  size: number;
  virtualSize: number | null;
  layout: 'qcow2' | 'bytes' | null;
  storedBytes: number;
  uniqueBytes: number;
}

export interface RepoView {
  key: string;
  /** Manifests, image or not, newest first as listed. */
  manifests: ManifestSummary[];
  /** Snapshots (manifests carrying an image) by manifest digest. */
  rows: Map<string, SnapshotRow>;
  logicalBytes: number;
  storedBytes: number;
  /** Cumulative logical and stored bytes after each snapshot, oldest first. */
  growth: Array<{ time: number; logicalBytes: number; storedBytes: number }>;
}

export const dedupRatio = (logical: number, stored: number): number | null => (stored > 0 ? Math.round((logical / stored) * 1000) / 1000 : null);

/** Bounded maps: the oldest entry goes first past `max`. */
function put<K, V>(m: Map<K, V>, k: K, v: V, max: number): void {
  m.delete(k);
  m.set(k, v);
  if (m.size > max) m.delete(m.keys().next().value as K);
}

export class RepoViews {
  private readonly views = new Map<string, RepoView>();
  private readonly pending = new Map<string, Promise<RepoView>>();
  private readonly deltas = new Map<string, number>();

  constructor(private readonly opts: { maxRepos?: number; maxDeltas?: number } = {}) {}

  /** The repository's view, computed when its manifests changed since the last one. */
  async view(store: Store, repo: string): Promise<RepoView> {
    const manifests = await store.meta.listManifests(repo);
    const key = createHash('sha256').update(manifests.map((m) => `${m.digest}${m.imageBlob ?? ''}`).sort().join('\n')).digest('hex');
    const hit = this.views.get(repo);
    if (hit?.key === key) return hit;
    const id = `${repo}\n${key}`;
    let p = this.pending.get(id);
    if (!p) {
      p = compute(store, manifests, key).finally(() => this.pending.delete(id));
      this.pending.set(id, p);
    }
    const v = await p;
    put(this.views, repo, v, this.opts.maxRepos ?? 256);
    return v;
  }

  /** Stored bytes of the chunks of `to`'s image that `from`'s image does not reference: what a node holding `from` still needs. */
  async delta(store: Store, from: ManifestSummary, to: ManifestSummary): Promise<number | null> {
    if (!from.imageBlob || !to.imageBlob) return null;
    const k = `${from.imageBlob}>${to.imageBlob}`;
    const hit = this.deltas.get(k);
    if (hit !== undefined) return hit;
    const [a, b] = await Promise.all([imageFacts(store, from), imageFacts(store, to)]);
    if (!a.blob || !b.blob) return null;
    const fresh = [...b.chunks.keys()].filter((c) => !a.chunks.has(c));
    const bytes = sumOf(await storedSizes(store, fresh), fresh);
    put(this.deltas, k, bytes, this.opts.maxDeltas ?? 100_000);
    return bytes;
  }
}

async function compute(store: Store, manifests: ManifestSummary[], key: string): Promise<RepoView> {
  const images = manifests.filter((m) => m.imageBlob !== null).sort((a, b) => a.createdMs - b.createdMs || (a.digest < b.digest ? -1 : 1));
  // Pass 1, oldest first: how many snapshots reference each chunk, its stored size, and the running totals.
  const refs = new Map<string, number>();
  const sizes = new Map<string, number>();
  const rows = new Map<string, SnapshotRow>();
  const growth: RepoView['growth'] = [];
  let logical = 0;
  let stored = 0;
  for (const m of images) {
    const f = await imageFacts(store, m);
    if (!f.blob || f.size === null) continue;
    const fresh = [...f.chunks.keys()].filter((c) => !sizes.has(c));
    for (const [c, n] of await storedSizes(store, fresh)) {
      sizes.set(c, n);
      stored += n;
    }
    for (const c of f.chunks.keys()) refs.set(c, (refs.get(c) ?? 0) + 1);
    logical += f.size;
    growth.push({ time: m.createdMs, logicalBytes: logical, storedBytes: stored });
    rows.set(m.digest, { digest: m.digest, blob: f.blob, createdMs: m.createdMs, size: f.size, virtualSize: f.virtualSize, layout: f.layout, storedBytes: sumOf(sizes, f.chunks.keys()), uniqueBytes: 0 });
  }
  // Pass 2: unique bytes (chunks only this snapshot references); the indexes come from the store's index cache.
  for (const m of images) {
    const row = rows.get(m.digest);
    if (!row) continue;
    const f = await imageFacts(store, m);
    row.uniqueBytes = sumOf(sizes, [...f.chunks.keys()].filter((c) => refs.get(c) === 1));
  }
  return { key, manifests, rows, logicalBytes: logical, storedBytes: stored, growth };
}

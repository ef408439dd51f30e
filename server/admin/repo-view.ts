/**
 * What the web page's repository views need, computed once per state of a
 * repository and kept (the admin API's `_overview`, `_versions`, `_lineage`):
 * per snapshot its image size, virtual size, stored and unique bytes; the
 * repository's logical and stored bytes and their growth over time; and the
 * delta between two images (the definition of `snapyard stats`, cached per
 * pair of image blobs, which never change). A repository's state is the set
 * of its manifests: after a push the next request reads the chunk indexes of
 * the new snapshots only; after a removal, of every snapshot; requests in
 * between read the cache (listing the manifests is one metadata query).
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

/** A view and what keeps it up to date as snapshots are added: each chunk's stored size and who references it. */
interface RepoState extends RepoView {
  sizes: Map<string, number>;
  /** Chunk -> the one snapshot referencing it (its digest), or how many do (2 or more). */
  refs: Map<string, string | number>;
}

export const dedupRatio = (logical: number, stored: number): number | null => (stored > 0 ? Math.round((logical / stored) * 1000) / 1000 : null);

/** Bounded maps: the oldest entry goes first past `max`. */
function put<K, V>(m: Map<K, V>, k: K, v: V, max: number): void {
  m.delete(k);
  m.set(k, v);
  if (m.size > max) m.delete(m.keys().next().value as K);
}

const byCreated = (a: ManifestSummary, b: ManifestSummary) => a.createdMs - b.createdMs || (a.digest < b.digest ? -1 : 1);

export class RepoViews {
  private readonly views = new Map<string, RepoState>();
  private readonly running = new Map<string, Promise<RepoState>>();
  private readonly deltas = new Map<string, number>();

  /** maxRepos: repositories whose state is kept (each holds a map of its distinct chunks). */
  constructor(private readonly opts: { maxRepos?: number; maxDeltas?: number } = {}) {}

  /**
   * The repository's view. When its manifests changed since the last one: only
   * snapshots added after it (the usual case, a push) have their chunk indexes
   * read; anything else (a removal) computes it again from every snapshot.
   */
  async view(store: Store, repo: string): Promise<RepoView> {
    const manifests = await store.meta.listManifests(repo);
    const key = createHash('sha256').update(manifests.map((m) => `${m.digest}${m.imageBlob ?? ''}`).sort().join('\n')).digest('hex');
    const hit = this.views.get(repo);
    if (hit?.key === key) return hit;
    // One update at a time per repository: an update adds to the previous state's chunk maps.
    const run = async (): Promise<RepoState> => {
      const cur = this.views.get(repo);
      if (cur?.key === key) return cur;
      try {
        const v = await update(store, cur ?? null, manifests, key);
        put(this.views, repo, v, this.opts.maxRepos ?? 32);
        return v;
      } catch (e) {
        this.views.delete(repo); // its maps may be half updated
        throw e;
      }
    };
    const p = (this.running.get(repo) ?? Promise.resolve()).catch(() => undefined).then(run);
    this.running.set(repo, p);
    void p.catch(() => undefined).finally(() => {
      if (this.running.get(repo) === p) this.running.delete(repo);
    });
    return p;
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

/** The previous state with the added snapshots counted in, when only snapshots newer than it were added; else a state computed from every snapshot. */
async function update(store: Store, prev: RepoState | null, manifests: ManifestSummary[], key: string): Promise<RepoState> {
  const images = manifests.filter((m) => m.imageBlob !== null).sort(byCreated);
  const before = prev ? new Set(prev.manifests.filter((m) => m.imageBlob !== null).map((m) => m.digest)) : null;
  const now = new Set(images.map((m) => m.digest));
  const lastTime = prev?.growth.at(-1)?.time ?? -Infinity;
  const added = before ? images.filter((m) => !before.has(m.digest)) : [];
  const onlyAdded = prev !== null && before !== null && [...before].every((d) => now.has(d)) && added.every((m) => m.createdMs >= lastTime);
  const state: RepoState = onlyAdded
    ? { ...prev, key, manifests, rows: new Map([...prev.rows].map(([d, r]) => [d, { ...r }])), growth: [...prev.growth], sizes: prev.sizes, refs: prev.refs }
    : { key, manifests, rows: new Map(), logicalBytes: 0, storedBytes: 0, growth: [], sizes: new Map(), refs: new Map() };
  // The chunk maps pass to the new state (requests holding the previous one read only its rows and totals).
  for (const m of onlyAdded ? added : images) await addSnapshot(store, state, m);
  return state;
}

/** Counts one snapshot in: its new chunks' stored sizes, its row, its unique bytes (taken from the snapshot that held a chunk alone until now), the running totals. */
async function addSnapshot(store: Store, s: RepoState, m: ManifestSummary): Promise<void> {
  const f = await imageFacts(store, m);
  if (!f.blob || f.size === null) return;
  const fresh = [...f.chunks.keys()].filter((c) => !s.sizes.has(c));
  for (const [c, n] of await storedSizes(store, fresh)) {
    s.sizes.set(c, n);
    s.storedBytes += n;
  }
  const row: SnapshotRow = { digest: m.digest, blob: f.blob, createdMs: m.createdMs, size: f.size, virtualSize: f.virtualSize, layout: f.layout, storedBytes: sumOf(s.sizes, f.chunks.keys()), uniqueBytes: 0 };
  s.rows.set(m.digest, row);
  for (const c of f.chunks.keys()) {
    const r = s.refs.get(c);
    const n = s.sizes.get(c) ?? 0;
    if (r === undefined) {
      s.refs.set(c, m.digest);
      row.uniqueBytes += n;
    } else if (typeof r === 'string') {
      const owner = s.rows.get(r);
      if (owner) owner.uniqueBytes -= n;
      s.refs.set(c, 2);
    } else s.refs.set(c, r + 1);
  }
  s.logicalBytes += f.size;
  s.growth.push({ time: m.createdMs, logicalBytes: s.logicalBytes, storedBytes: s.storedBytes });
}

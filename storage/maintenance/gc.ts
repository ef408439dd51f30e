/**
 * Online garbage collection: mark and sweep, manifests -> blobs -> indexes ->
 * chunks, while pushes and pulls go on (docs/storage.md, "Garbage collection,
 * verify, expiry").
 *
 * Mark (no lock): the live blobs are those any manifest references plus those
 * linked into a repository within the grace period (a push links its blobs
 * before it puts their manifest); each live blob marks its index chunk and
 * every chunk its index lists. Meanwhile the chunk store remembers every chunk
 * a writer finds already held (its write barrier).
 *
 * Sweep (under the commit lock, so no commit interleaves): the live set is
 * read again and blobs that became live since the mark are marked too; stale
 * links (older than the grace, referenced by no manifest of their repository)
 * are removed and blobs linked nowhere and referenced by nothing are deleted;
 * then, in one synchronous step, every chunk row older than the grace that is
 * not marked, not pinned by an open session (chunk-pins.ts), not being
 * written and not found by a writer during the mark is deleted.
 *
 * Reclaim: packs whose live fraction fell below `minLive` are rewritten
 * (pack-compactor.ts). Sketches (sketches.db) of deleted chunks are left: a
 * cache keyed by content, only ever looked up for chunks that exist.
 */
import type { BlobIndex } from '../blobs/blob-index.js';
import type { BlobStore } from '../blobs/blob-store.js';
import type { ChunkPins } from '../coord/chunk-pins.js';
import type { AsyncLock } from '../coord/commit-lock.js';
import type { Digest } from '../digest.js';
import type { MaintainedChunkStore } from '../chunks/maintained-chunk-store.js';
import type { MetadataStore } from '../meta/metadata-store.js';
import type { Coordinator } from '../coord/coordinator.js';

export interface GcStore {
  meta: MetadataStore;
  chunks: MaintainedChunkStore;
  blobs: BlobStore;
  pins: ChunkPins;
  lock: AsyncLock;
  coord: Pick<Coordinator, 'oldestSessionMs'>;
  /** Sessions idle longer than this are expired (they protect nothing). */
  uploadTtlMs: number;
}

/**
 * How far replicas' clocks may disagree: the cutoff is moved this much
 * before the oldest open session's start (docs/deploy-replicas.md).
 */
export const CLOCK_SKEW_MS = 60_000;

export interface GcOptions {
  dryRun?: boolean;
  /** Unreferenced chunks and links younger than this are kept (default 1 h). */
  graceMs?: number;
  /** Packs whose live bytes are below this fraction of their size are rewritten (default 0.5; 0 = never). */
  minLive?: number;
  /**
   * Unused bytes left in packs, as a fraction of the live bytes (default 0.1,
   * restic's `prune --max-unused`): the packs with the most unused bytes are
   * rewritten until the rest is within it. Infinity: only minLive decides.
   */
  maxUnused?: number;
  /** The maintenance lease's fence (coord/coordinator.ts), checked before each destructive step: throws to stop. */
  fence?: () => Promise<void>;
}

export const DEFAULT_MAX_UNUSED = 0.1;

export interface GcReport {
  dryRun: boolean;
  graceSeconds: number;
  /** Chunks (and their stored bytes, record headers included) freed or that would be. */
  chunks: number;
  storedBytes: number;
  blobsUnlinked: number;
  blobsDeleted: number;
  packsRewritten: number;
  packsDeleted: number;
  /** Bytes the pack files shrank by (compaction and deletion of empty packs). */
  packBytesFreed: number;
  marked: { blobs: number; chunks: number };
  /** Live blobs whose index could not be read (verify names them). */
  unreadableBlobs: Digest[];
  seconds: number;
}

export const DEFAULT_GRACE_MS = 60 * 60 * 1000;

export async function collectGarbage(store: GcStore, opts: GcOptions = {}): Promise<GcReport> {
  const t0 = performance.now();
  const dryRun = opts.dryRun === true;
  const graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
  const fence = opts.fence ?? (async () => {});
  const now = store.meta.now();
  // Sessions open on other replicas touched what they rely on since they started: keep all that too.
  const oldest = await store.coord.oldestSessionMs(now - store.uploadTtlMs);
  const cutoff = Math.min(now - graceMs, oldest === null ? Infinity : oldest - CLOCK_SKEW_MS);
  const marked = new Set<string>(); // hex digests
  const markedBlobs = new Set<Digest>();
  const unreadable: Digest[] = [];
  const markBlob = async (digest: Digest) => {
    if (markedBlobs.has(digest)) return;
    markedBlobs.add(digest);
    const rec = await store.meta.getBlob(digest);
    if (!rec) return;
    marked.add(rec.indexDigest.slice(7));
    let index: BlobIndex;
    try {
      index = await store.blobs.index(rec);
    } catch {
      unreadable.push(digest);
      return;
    }
    for (const list of index.lists()) for (let i = 0; i < list.count; i++) marked.add(list.rawDigestAt(i).toString('hex'));
  };
  store.chunks.beginMark();
  try {
    for (const d of await store.meta.gcLiveBlobs(cutoff)) await markBlob(d);
    const sweep = async () => {
      // Blobs that became live since the mark (a manifest put, a mount, a commit).
      for (const d of await store.meta.gcLiveBlobs(cutoff)) await markBlob(d);
      await store.chunks.flush(); // rows of chunks written so far, and refreshed times
      // Under the commit lock: no manifest put, mount or blob commit interleaves from here on (pins are checked in the sweep itself).
      if (!dryRun) await fence();
      const blobs = await store.meta.gcBlobs(cutoff, dryRun);
      for (const d of blobs.deleted) store.blobs.forget(d);
      const keep = (d: Digest) => marked.has(d.slice(7)) || store.pins.has(d);
      if (!dryRun) await fence();
      const chunks = await store.chunks.sweep(cutoff, keep, dryRun);
      return { blobs, chunks };
    };
    const { blobs, chunks } = dryRun ? await sweep() : await store.lock.run(sweep);
    store.chunks.endMark();
    let packs = { rewritten: 0, deleted: 0, freedBytes: 0 };
    const minLive = opts.minLive ?? 0.5;
    const maxUnused = opts.maxUnused ?? DEFAULT_MAX_UNUSED;
    if (!dryRun && (minLive > 0 || Number.isFinite(maxUnused))) packs = await store.chunks.compact({ minLive, maxUnused, fence });
    return {
      dryRun,
      graceSeconds: graceMs / 1000,
      chunks: chunks.chunks,
      storedBytes: chunks.storedBytes,
      blobsUnlinked: blobs.unlinked,
      blobsDeleted: blobs.deleted.length,
      packsRewritten: packs.rewritten,
      packsDeleted: packs.deleted,
      packBytesFreed: packs.freedBytes,
      marked: { blobs: markedBlobs.size, chunks: marked.size },
      unreadableBlobs: unreadable,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    store.chunks.endMark();
  }
}

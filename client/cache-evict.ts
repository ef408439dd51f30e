/**
 * The node cache's size bound (`--cache-max`): run when a command closes its
 * cache (ClientCache.close).
 *
 * 1. Under the state lock, synchronously (so no process registers or claims
 *    a snapshot meanwhile): the chunks every live user needs (its registered
 *    blobs) are kept; then held snapshots, most recently used first, while
 *    their chunks fit in the bound; the first that does not fit and every
 *    older one are dropped from `held`, and every chunk nothing kept claims
 *    loses its index row (LocalChunkStore.sweep; chunks added or touched
 *    after the eviction started survive).
 * 2. Space: packs left with no live record are deleted, unless a live user
 *    writes packs of that name; packs mostly dead are rewritten only while no
 *    other process uses the cache (a reader elsewhere may have located a
 *    chunk in the old pack), under the `rewrite` marker that new users wait
 *    for.
 *
 * One eviction at a time (DIR/evict.lock); a command finding one running
 * leaves the work to it.
 */
import lockfile from 'proper-lockfile';
import { join } from 'node:path';
import { decodeBlobIndex, chunkSet } from '../storage/blobs/blob-index.js';
import type { Digest } from '../storage/digest.js';
import type { LocalChunkStore } from '../storage/chunks/local-chunk-store.js';
import { REWRITE_STALE_MS, type HeldSnapshot, type State } from './cache.js';

export interface EvictTarget {
  readonly dir: string;
  readonly chunks: LocalChunkStore;
  readonly userId: string;
  readIndex(blob: Digest): Buffer | null;
  userAlive(id: string): boolean;
  mutateState(fn: (s: State) => boolean): void;
}

export interface EvictSummary {
  /** Another process was evicting: nothing done here. */
  skipped: boolean;
  storedBefore: number;
  storedAfter: number;
  chunksEvicted: number;
  /** Snapshots no longer held (least recently used first out). */
  dropped: Digest[];
  packsDeleted: number;
  packsRewritten: number;
  /** Pack file bytes given back to the file system. */
  bytesFreed: number;
}

/** A pack is rewritten when at least this share of it is dead. */
const REWRITE_DEAD_SHARE = 0.25;

export async function evictCache(cache: EvictTarget, maxBytes: number): Promise<EvictSummary> {
  const { chunks } = cache;
  await chunks.sealPacks(); // this process's packs: complete, committed, never appended to again
  const storedBefore = chunks.statsNow().stored;
  const out: EvictSummary = { skipped: false, storedBefore, storedAfter: storedBefore, chunksEvicted: 0, dropped: [], packsDeleted: 0, packsRewritten: 0, bytesFreed: 0 };
  if (storedBefore <= maxBytes) return out;
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(join(cache.dir, 'evict'), { realpath: false, lockfilePath: join(cache.dir, 'evict.lock'), stale: REWRITE_STALE_MS, onCompromised: () => {} });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
    return { ...out, skipped: true };
  }
  try {
    let busyPrefixes: string[] = [];
    cache.mutateState((s) => {
      const live = Object.entries(s.users).filter(([id]) => id === cache.userId || cache.userAlive(id));
      busyPrefixes = live.filter(([id]) => id !== cache.userId).map(([, u]) => u.packPrefix);
      const keep = new Set<Digest>();
      let kept = 0;
      const claim = (blob: Digest): { add: Digest[]; bytes: number } | null => {
        const bytes = cache.readIndex(blob);
        if (!bytes) return null;
        const add = [...chunkSet(decodeBlobIndex(bytes)).keys()].map((hex) => `sha256:${hex}` as Digest).filter((d) => !keep.has(d));
        const lens = chunks.storedLengthsNow(add.map((d) => Buffer.from(d.slice(7), 'hex')));
        return { add, bytes: lens.reduce<number>((n, l) => n + (l ?? 0), 0) };
      };
      const take = (c: { add: Digest[]; bytes: number }) => {
        for (const d of c.add) keep.add(d);
        kept += c.bytes;
      };
      for (const [, u] of live) for (const b of u.blobs) {
        const c = claim(b);
        if (c) take(c);
      }
      const held: HeldSnapshot[] = [];
      let full = false;
      for (const h of s.held) {
        const c = full ? null : claim(h.blob);
        if (c && kept + c.bytes <= maxBytes) {
          take(c);
          held.push(h);
        } else {
          full = true;
          out.dropped.push(h.blob);
        }
      }
      const swept = chunks.sweepNow(Date.now(), (d) => keep.has(d), false);
      out.chunksEvicted = swept.chunks;
      s.held = held;
      return true;
    });
    out.storedAfter = chunks.statsNow().stored;
    await reclaim(cache, busyPrefixes, out);
    return out;
  } finally {
    await release();
  }
}

/** Gives the dead packs' space back (see the file comment). */
async function reclaim(cache: EvictTarget, busyPrefixes: string[], out: EvictSummary): Promise<void> {
  const { chunks } = cache;
  const live = chunks.packLive();
  const free = chunks.packNames().filter((p) => !busyPrefixes.some((b) => p.startsWith(b)));
  for (const p of free) {
    if (live.has(p)) continue;
    const size = chunks.packSize(p);
    await chunks.rewritePack(p); // no live record: only deletes
    out.packsDeleted++;
    out.bytesFreed += size;
  }
  const partly = free.filter((p) => {
    const l = live.get(p);
    return l !== undefined && chunks.packSize(p) - l.storedBytes >= REWRITE_DEAD_SHARE * chunks.packSize(p);
  });
  if (partly.length === 0) return;
  const marker = join(cache.dir, 'rewrite');
  const releaseMarker = lockfile.lockSync(marker, { realpath: false, lockfilePath: `${marker}.lock`, stale: REWRITE_STALE_MS, onCompromised: () => {} });
  try {
    let others = true;
    // Users register under the state lock after checking the marker: any that are not listed now wait for it.
    cache.mutateState((s) => {
      others = Object.keys(s.users).some((id) => id !== cache.userId && cache.userAlive(id));
      return false;
    });
    if (others) return;
    for (const p of partly) {
      const r = await chunks.rewritePack(p);
      out.packsRewritten++;
      out.bytesFreed += r.freedBytes;
    }
  } finally {
    releaseMarker();
  }
}

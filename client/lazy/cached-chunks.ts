/**
 * Reads of a lazy mount from the node cache, batched, and the small memory
 * of recent chunks in front of it.
 *
 * readCached: the chunks of one guest read are read from the cache in
 * groups of about 2 MiB, one `getConcat` each (the store's worker threads
 * decode and verify every chunk against its digest; the groups run on both
 * workers at once and reuse the store's read buffers), instead of one
 * worker round trip per chunk. A group that fails (a chunk the cache lacks,
 * or a record corrupt) is read again chunk by chunk, so one such chunk costs
 * only itself: a lacking one is reported missing; a corrupt one is never
 * returned; it is counted, moved aside (the store's quarantine: the cache no
 * longer claims it) and reported missing, so the caller fetches it again.
 *
 * RecentChunks: verified chunk bytes kept by a byte budget, least recently
 * used dropped first: the chunks a read cut in the middle, which the
 * neighbouring read usually wants too; copied in and out, in recycled memory.
 */
import type { ChunkStore } from '../../storage/chunks/chunk-store.js';
import { digestFromRaw, type Digest } from '../../storage/digest.js';
import { isSnapyardError } from '../../storage/errors.js';
import type { Want } from '../fetch.js';
import { BufferPool } from './buffer-pool.js';

/** What a batched read needs of the cache's chunk store (LocalChunkStore); `quarantine` moves a corrupt record aside so the chunk can be fetched again. */
export type CachedStore = Pick<ChunkStore, 'has' | 'get' | 'getConcat' | 'release' | 'scratch'> & {
  quarantine?(digest: Digest): Promise<string | null>;
  /** getConcat on the caller's thread (LocalChunkStore), into `into` when given: used for a read of at most HERE_BYTES. */
  getConcatHere?(digests: Digest[], lengths: number[], into?: Buffer): Promise<Buffer>;
};

/** A read of the cache this small is decoded on the main thread: a worker round trip costs more than the work. */
export const HERE_BYTES = 256 * 1024;

/** A group is closed once it holds this many bytes (with a largest chunk of 256 KiB it stays within the store's 2.25 MiB read buffers). */
export const GROUP_BYTES = 2 * 1024 * 1024;

export interface CachedBatch {
  /** Verified bytes by hex digest: views into the group buffers, valid until release(). */
  got: Map<string, Buffer>;
  /** Chunks the cache lacks (or holds corrupt). */
  missing: Want[];
  /** Chunks whose stored record failed verification. */
  corrupt: number;
  /** Hands the group buffers back to the store (call once the bytes are copied out). */
  release(): void;
}

function digestOf(hex: string): Digest {
  return digestFromRaw(Buffer.from(hex, 'hex'));
}

function unreadable(e: unknown): boolean {
  return isSnapyardError(e, 'CHUNK_CORRUPT') || isSnapyardError(e, 'CHUNK_MISSING');
}

export async function readCached(store: CachedStore, wants: Want[]): Promise<CachedBatch> {
  const missing: Want[] = [];
  // No look first: a group with a chunk the cache lacks fails as a whole and is read again chunk by chunk (below),
  // which costs a read of a cold cache little next to the network, and spares a warm one a lookup per chunk.
  const held = wants.map((want) => ({ want, digest: digestOf(want.hex) }));
  const groups: Array<typeof held> = [];
  let group: typeof held = [];
  let bytes = 0;
  for (const h of held) {
    group.push(h);
    bytes += h.want.length;
    if (bytes >= GROUP_BYTES) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
  }
  if (group.length > 0) groups.push(group);
  const got = new Map<string, Buffer>();
  const buffers: Buffer[] = [];
  let corrupt = 0;
  const total = held.reduce((n, h) => n + h.want.length, 0);
  const here = store.getConcatHere !== undefined && total <= HERE_BYTES;
  await Promise.all(groups.map(async (g) => {
    try {
      const ds = g.map((h) => h.digest);
      const ls = g.map((h) => h.want.length);
      // Decoded into one of the store's reused buffers where it lends one (handed back by release()).
      const into = here ? (store.scratch?.(total) ?? undefined) : undefined;
      if (into) buffers.push(into);
      const buf = here ? await store.getConcatHere!(ds, ls, into) : await store.getConcat(ds, ls);
      if (!here) buffers.push(buf);
      let at = 0;
      for (const { want } of g) {
        got.set(want.hex, buf.subarray(at, at + want.length));
        at += want.length;
      }
      return;
    } catch (e) {
      if (!unreadable(e)) throw e;
    }
    // One of the group is lacking or corrupt: each on its own, so the others are still served
    // (a lacking one found by a look, not an error: on a node still fetching, most reads have some).
    for (const { want, digest } of g) {
      if (!(await store.has(digest))) {
        missing.push(want);
        continue;
      }
      try {
        const b = await store.get(digest);
        if (b.byteLength === want.length) {
          got.set(want.hex, b);
          continue;
        }
      } catch (e) {
        if (!unreadable(e)) throw e;
        if (!isSnapyardError(e, 'CHUNK_CORRUPT')) {
          missing.push(want);
          continue;
        }
      }
      corrupt++;
      await store.quarantine?.(digest);
      missing.push(want);
    }
  }));
  return {
    got, missing, corrupt,
    release: () => {
      for (const b of buffers.splice(0)) store.release?.(b);
      got.clear();
    },
  };
}

/**
 * Verified chunk bytes by hex digest within a byte budget, least recently
 * used dropped first. Each is a copy in memory of its own, recycled when it
 * is dropped (a mount reading a cached snapshot in 3 KB reads kept a 64 KiB
 * copy per read for the garbage collector: a third of its CPU went to GC).
 * The bytes are only ever copied out, never lent, so recycling is safe
 * whatever reads are in flight.
 */
export class RecentChunks {
  /** Oldest first (a Map keeps insertion order; a use moves the entry to the end). */
  private readonly entries = new Map<string, Buffer>();
  private readonly slabs: BufferPool;
  private held = 0;

  constructor(readonly budget: number) {
    // Dropped copies wait for reuse within a quarter of the budget.
    this.slabs = new BufferPool(Math.floor(budget / 4), RECENT_GRANULE);
  }

  /** Bytes held (the copies' memory; never above the budget). */
  get bytes(): number {
    return this.held;
  }

  has(hex: string): boolean {
    return this.entries.has(hex);
  }

  /** Copies bytes [from, to) of the chunk into `out` at `at` and makes it the most recent; false when not held. */
  copyOut(hex: string, from: number, to: number, out: Buffer, at: number): boolean {
    const b = this.entries.get(hex);
    if (!b) return false;
    this.entries.delete(hex);
    this.entries.set(hex, b);
    b.copy(out, at, from, to);
    return true;
  }

  /** Keeps a copy of `b` (the caller's buffer may be reused); a chunk larger than the budget is not kept. */
  put(hex: string, b: Buffer): void {
    const size = this.slabs.sizeFor(b.byteLength);
    if (this.entries.has(hex) || size > this.budget) return;
    for (const [old, kept] of this.entries) {
      if (this.held + size <= this.budget) break;
      this.entries.delete(old);
      this.held -= this.slabs.sizeFor(kept.byteLength);
      this.slabs.give(kept);
    }
    const copy = this.slabs.take(b.byteLength);
    b.copy(copy);
    this.entries.set(hex, copy);
    this.held += size;
  }
}

/** Recent chunks' copies are sized in steps of this (FastCDC's chunks: 16-256 KiB). */
const RECENT_GRANULE = 16 * 1024;

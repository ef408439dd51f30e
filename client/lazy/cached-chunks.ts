/**
 * Reads of a lazy mount from the node cache, batched, and the small memory
 * of recent chunks in front of it.
 *
 * readCached: the chunks of one guest read that the cache holds are read in
 * groups of about 2 MiB, one `getConcat` each (the store's worker threads
 * decode and verify every chunk against its digest; the groups run on both
 * workers at once and reuse the store's read buffers), instead of one
 * worker round trip per chunk. A group that fails (a record corrupt, or gone
 * since the look) is read again chunk by chunk, so one bad chunk costs only
 * itself: it is never returned; it is counted, moved aside (the store's
 * quarantine: the cache no longer claims it) and reported missing, so the
 * caller fetches it again.
 *
 * RecentChunks: verified chunk bytes kept by a byte budget, least recently
 * used dropped first: the chunks a read cut in the middle, which the
 * neighbouring read usually wants too.
 */
import type { ChunkStore } from '../../storage/chunks/chunk-store.js';
import { digestFromRaw, type Digest } from '../../storage/digest.js';
import { isSnapyardError } from '../../storage/errors.js';
import { MemoryBudget, type BudgetCache } from '../../storage/memory-budget.js';
import type { Want } from '../fetch.js';

/** What a batched read needs of the cache's chunk store (LocalChunkStore); `quarantine` moves a corrupt record aside so the chunk can be fetched again. */
export type CachedStore = Pick<ChunkStore, 'has' | 'get' | 'getConcat' | 'release'> & {
  quarantine?(digest: Digest): Promise<string | null>;
  /** getConcat on the caller's thread (LocalChunkStore): used for a read of at most HERE_BYTES. */
  getConcatHere?(digests: Digest[], lengths: number[]): Promise<Buffer>;
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
  const held: Array<{ want: Want; digest: Digest }> = [];
  for (const w of wants) {
    const digest = digestOf(w.hex);
    if (await store.has(digest)) held.push({ want: w, digest });
    else missing.push(w);
  }
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
      const buf = here ? await store.getConcatHere!(ds, ls) : await store.getConcat(ds, ls);
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
    // One of the group is corrupt or gone: each on its own, so the others are still served.
    for (const { want, digest } of g) {
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

/** Verified chunk bytes by hex digest within a byte budget, least recently used dropped first (a MemoryBudget of its own). */
export class RecentChunks {
  private readonly cache: BudgetCache<string, Buffer>;

  constructor(readonly budget: number) {
    this.cache = new MemoryBudget(budget).cache('recent-chunks', (b: Buffer) => b.byteLength, { maxEntryBytes: budget });
  }

  /** Bytes held (never above the budget). */
  get bytes(): number {
    return this.cache.bytes;
  }

  get(hex: string): Buffer | undefined {
    return this.cache.get(hex);
  }

  /** Keeps a copy of `b` (the caller's buffer may be reused); a chunk larger than the budget is not kept. */
  put(hex: string, b: Buffer): void {
    if (this.cache.has(hex) || b.byteLength > this.budget) return;
    this.cache.set(hex, Buffer.from(b));
  }
}

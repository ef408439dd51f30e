/**
 * The read side of a RemoteChunkStore: records fetched from packs through a
 * PackDriver, one ranged GET per run of records that lie end to end in one
 * pack (a run is capped at `runBytes`), each record's header checked against
 * the chunk it should hold (pack-files.ts format). A small LRU keeps recently
 * fetched stored forms (bounded by bytes), so a chunk a blob repeats, or that
 * several readers want at once, is fetched once.
 */
import { MemoryBudget, type BudgetCache } from '../memory-budget.js';
import { ChunkCorruptError, isSnapyardError } from '../errors.js';
import { digestFromHex, hexOf, type Digest } from '../digest.js';
import type { PackDriver } from './pack-driver.js';
import { RECORD_HEADER_SIZE, RECORD_MAGIC } from './pack-files.js';

/** A record in a pack: `offset` of its header, `length` of the stored chunk after it. */
export interface RemoteLocation {
  pack: string;
  offset: number;
  length: number;
}

export const DEFAULT_RUN_BYTES = 8 * 1024 * 1024;
export const DEFAULT_READ_CACHE_BYTES = 64 * 1024 * 1024;
/**
 * A GET that goes on from the last one started in its pack (reads going
 * through a pack in order: a blob's records lie in its order, and pulls ask
 * for them a few at a time) reads at least this much: the records after the
 * ones asked go to the cache. Other GETs read only what they are asked.
 */
export const DEFAULT_READ_AHEAD_BYTES = 1024 * 1024;
/**
 * Records read ahead wait for the next call of their stream in a small cache
 * of their own, not in the shared one: a stream's read-ahead is wanted once,
 * milliseconds later, and pushed through the shared budget it evicted what
 * delta encoding keeps there (ten full GETs filled 128 MB with it).
 */
export const DEFAULT_AHEAD_CACHE_BYTES = 16 * 1024 * 1024;

/** The stored chunk of a record read at `at` of `buf`, after checking its header names `digest` and `length`. */
export function storedOfRecord(buf: Buffer, at: number, digest: Digest, loc: RemoteLocation): Buffer {
  const end = at + RECORD_HEADER_SIZE + loc.length;
  if (
    end > buf.byteLength ||
    buf.readUInt32LE(at) !== RECORD_MAGIC ||
    buf.toString('hex', at + 4, at + 36) !== hexOf(digest) ||
    buf.readUInt32LE(at + 36) !== loc.length
  ) {
    throw new ChunkCorruptError(digest, `record header at ${loc.pack}:${loc.offset} does not match`);
  }
  return buf.subarray(at + RECORD_HEADER_SIZE, end);
}

/** Least recently used stored forms, in a memory budget: a copy of each (a view would keep a whole run's buffer alive). */
class StoredCache {
  constructor(private readonly cache: BudgetCache<Digest, Buffer>) {}

  get(d: Digest): Buffer | undefined {
    return this.cache.get(d);
  }

  set(d: Digest, b: Buffer): void {
    if (!this.cache.has(d)) this.cache.set(d, Buffer.from(b));
  }

  delete(d: Digest): void {
    this.cache.delete(d);
  }
}

export interface FetchOptions {
  /**
   * Keep the records asked for in the read cache (default): reads at random,
   * such as delta encoding's, that may come back. A stream's reads (a blob
   * GET, compaction) pass false: they will not ask again, and ten concurrent
   * GETs filled the whole shared budget with copies of what they read.
   */
  keep?: boolean;
}

export class RemoteRecordReader {
  private readonly cache: StoredCache;
  private readonly ahead: StoredCache;

  constructor(
    private readonly driver: PackDriver,
    opts: { cacheBytes?: number; cache?: BudgetCache<Digest, Buffer> | undefined; runBytes?: number; readAheadBytes?: number; aheadCacheBytes?: number; driverKeeps?: boolean } = {},
    private readonly runBytes = opts.runBytes ?? DEFAULT_RUN_BYTES,
    private readonly readAheadBytes = opts.readAheadBytes ?? DEFAULT_READ_AHEAD_BYTES,
  ) {
    this.cache = new StoredCache(opts.cache ?? new MemoryBudget(opts.cacheBytes ?? DEFAULT_READ_CACHE_BYTES).cache('remote-reads', (b: Buffer) => b.byteLength));
    this.ahead = new StoredCache(new MemoryBudget(opts.aheadCacheBytes ?? DEFAULT_AHEAD_CACHE_BYTES).cache('remote-read-ahead', (b: Buffer) => b.byteLength + 64));
    this.driverKeeps = opts.driverKeeps === true;
  }

  /** The driver keeps what it is asked to (ReadHint.keep: a local disk cache in front of the bucket): random reads are not kept in memory too. */
  private readonly driverKeeps: boolean;

  /** Forgets a chunk (its record turned out corrupt: the next read fetches it again). */
  forget(d: Digest): void {
    this.cache.delete(d);
    this.ahead.delete(d);
  }

  /** A cached stored form: read ahead by a stream, or read at random earlier. */
  private cached(d: Digest): Buffer | undefined {
    return this.ahead.get(d) ?? this.cache.get(d);
  }

  /**
   * The stored forms of chunks (headers checked, payload not verified), in
   * the order asked. A pack that is not there fails with NOT_FOUND (the
   * caller may locate again: compaction moves records).
   */
  async fetch(digests: Digest[], locs: RemoteLocation[], opts: FetchOptions = {}): Promise<Buffer[]> {
    const out: Buffer[] = new Array(digests.length);
    const want = new Map<Digest, { loc: RemoteLocation; at: number[] }>();
    digests.forEach((d, i) => {
      const hit = this.cached(d);
      if (hit) out[i] = hit;
      else {
        const w = want.get(d);
        if (w) w.at.push(i);
        else want.set(d, { loc: locs[i]!, at: [i] });
      }
    });
    // Records a GET in flight (another call's, read ahead) will bring: wait for it rather than read them again.
    const riding: Array<Promise<void>> = [];
    for (const [d, w] of want) {
      const ride = this.inFlight.get(w.loc.pack)?.find((f) => f.start <= w.loc.offset && w.loc.offset + RECORD_HEADER_SIZE + w.loc.length <= f.end);
      if (!ride) continue;
      want.delete(d);
      riding.push(
        ride.buf
          .then((buf) => storedOfRecord(buf, w.loc.offset - ride.start, d, w.loc))
          .catch(async () => (await this.fetch([d], [w.loc], opts))[0]!) // that GET failed or came back short: read it alone
          .then((stored) => {
            for (const i of w.at) out[i] = stored;
          }),
      );
    }
    const items = [...want].sort(([, a], [, b]) => (a.loc.pack < b.loc.pack ? -1 : a.loc.pack > b.loc.pack ? 1 : a.loc.offset - b.loc.offset));
    const runs: Array<typeof items> = [];
    let run: typeof items = [];
    let runStart = 0;
    let runEnd = 0;
    let runLocal = false;
    for (const item of items) {
      const { loc } = item[1];
      const end = loc.offset + RECORD_HEADER_SIZE + loc.length;
      // Records on the local disk (kept reads) and the others go in runs of their own: a GET reads only what is not here.
      const local = this.driverKeeps && this.driver.holds?.(loc.pack, loc.offset, end - loc.offset) === true;
      const joins = run.length > 0 && run[0]![1].loc.pack === loc.pack && loc.offset === runEnd && end - runStart <= this.runBytes && local === runLocal;
      if (!joins) {
        if (run.length > 0) runs.push(run);
        run = [];
        runStart = loc.offset;
        runLocal = local;
      }
      run.push(item);
      runEnd = end;
    }
    if (run.length > 0) runs.push(run);
    await Promise.all([
      ...riding,
      ...runs.map(async (r) => {
        const first = r[0]![1].loc;
        const last = r[r.length - 1]![1].loc;
        const length = last.offset + RECORD_HEADER_SIZE + last.length - first.offset;
        // A run on the local disk is read as it is (no read-ahead, which would make it a GET).
        const local = this.driverKeeps && this.driver.holds?.(first.pack, first.offset, length) === true;
        const ahead = !local && this.sequential(first.pack, first.offset, length) ? this.readAheadBytes : 0;
        // A stream reading a pack in order will not ask again: only random reads (delta encoding's) are kept.
        const keep = ahead === 0 && opts.keep !== false;
        const buf = await this.tracked(first.pack, first.offset, Math.max(length, ahead), this.getRun(first.pack, first.offset, length, ahead, r[0]![0], keep && this.driverKeeps));
        for (const [d, { loc, at }] of r) {
          const stored = storedOfRecord(buf, loc.offset - first.offset, d, loc);
          if (keep && !this.driverKeeps) this.cache.set(d, stored);
          for (const i of at) out[i] = stored;
        }
        this.cacheAhead(buf, length);
      }),
    ]);
    return out;
  }

  /**
   * `length` bytes at `offset` of `pack`, read ahead to `ahead` bytes when
   * the run is shorter (less past the pack's end). A pack shorter than the
   * run itself: its bytes are not what the catalog recorded.
   */
  private async getRun(pack: string, offset: number, length: number, ahead: number, first: Digest, keep: boolean): Promise<Buffer> {
    const want = Math.max(length, ahead);
    try {
      return await this.driver.get(pack, offset, want, keep ? { keep } : undefined);
    } catch (e) {
      if (!isSnapyardError(e, 'RANGE_INVALID')) throw e;
      if (want > length) {
        const size = (e.detail as { size?: number } | undefined)?.size;
        const upTo = size !== undefined && size >= offset + length ? size - offset : length;
        try {
          return await this.driver.get(pack, offset, upTo);
        } catch (e2) {
          if (!isSnapyardError(e2, 'RANGE_INVALID')) throw e2;
        }
      }
      throw new ChunkCorruptError(first, `pack ${pack} ends before ${offset + length}`);
    }
  }

  /** GETs under way, by pack: what they will bring (end: as asked; the pack may end sooner). */
  private readonly inFlight = new Map<string, Array<{ start: number; end: number; buf: Promise<Buffer> }>>();

  /** Makes `buf` (a GET of `pack` from `start`, up to `length` bytes) visible to other reads until it settles. */
  private async tracked(pack: string, start: number, length: number, buf: Promise<Buffer>): Promise<Buffer> {
    const entry = { start, end: start + length, buf };
    let list = this.inFlight.get(pack);
    if (!list) this.inFlight.set(pack, (list = []));
    list.push(entry);
    try {
      return await buf;
    } finally {
      list.splice(list.indexOf(entry), 1);
      if (list.length === 0 && this.inFlight.get(pack) === list) this.inFlight.delete(pack);
    }
  }

  /** Caches the whole records read ahead after `from` (unverified: decoding checks each chunk's hash, and a chunk that fails is forgotten). */
  private cacheAhead(buf: Buffer, from: number): void {
    let at = from;
    while (at + RECORD_HEADER_SIZE <= buf.byteLength && buf.readUInt32LE(at) === RECORD_MAGIC) {
      const length = buf.readUInt32LE(at + 36);
      const end = at + RECORD_HEADER_SIZE + length;
      if (end > buf.byteLength) break;
      this.ahead.set(digestFromHex(buf.toString('hex', at + 4, at + 36)), buf.subarray(at + RECORD_HEADER_SIZE, end));
      at = end;
    }
  }

  /** The range the last GET started in each pack (the most recent packs) asks for. */
  private readonly lastGet = new Map<string, { start: number; end: number }>();

  /**
   * Whether a GET at `offset` goes on from the last one started in its pack
   * (starts within it or at most readAheadBytes after it: reads in order,
   * several at once); notes it as the last one.
   */
  private sequential(pack: string, offset: number, length: number): boolean {
    if (this.readAheadBytes <= 0) return false;
    const last = this.lastGet.get(pack);
    const on = last !== undefined && offset >= last.start && offset <= last.end + this.readAheadBytes;
    this.lastGet.delete(pack);
    this.lastGet.set(pack, { start: offset, end: offset + Math.max(length, on ? this.readAheadBytes : 0) });
    if (this.lastGet.size > 1024) this.lastGet.delete(this.lastGet.keys().next().value as string);
    return on;
  }
}

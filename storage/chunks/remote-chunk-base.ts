/**
 * The read side of a RemoteChunkStore (remote-chunk-store.ts): chunks still
 * pending in this store (queued for a batch, or in a spool segment whose rows
 * are not committed) are read from there; the others are located in the
 * catalog (one lookup per call, remembered in a location cache) and their
 * records fetched from the pack driver (remote-chunk-reads.ts: adjacent
 * records in one ranged GET), then decoded and verified on the codec workers.
 */
import { ChunkCodec, type ReadCheck } from './chunk-codec.js';
import { CodecPool } from './codec-pool.js';
import { MemoryBudget, type BudgetCache } from '../memory-budget.js';
import type { ChunkCatalog } from './chunk-catalog.js';
import type { PackDriver } from './pack-driver.js';
import { PackFileCache } from './pack-file-cache.js';
import { RECORD_HEADER_SIZE } from './pack-files.js';
import { localDigester, rawOf, type Digest, type StreamDigester } from '../digest.js';
import { ChunkCorruptError, ChunkMissingError, isSnapyardError } from '../errors.js';
import { DEFAULT_LEVEL } from './local-chunk-store.js';
import { DEFAULT_READ_CHECK } from './local-chunk-core.js';
import { RemoteRecordReader, storedOfRecord, type FetchOptions, type RemoteLocation } from './remote-chunk-reads.js';
import type { SpoolSegment } from './remote-chunk-spool.js';
import type { QueuedChunk } from './remote-chunk-writer.js';

export interface RemoteReadOptions {
  driver: PackDriver;
  catalog: ChunkCatalog;
  /** zstd level of new chunks (default: the local store's). */
  level?: number;
  /** Stored forms read at random kept in memory (default 64 MiB); with packCacheDir they are kept on its disk instead (keptReadBytes). */
  readCacheBytes?: number;
  /** Or: the read cache, in a shared memory budget (memory-budget.ts); readCacheBytes is then ignored. */
  readCache?: BudgetCache<Digest, Buffer>;
  /** Where recently read chunks are (saves a catalog lookup per read; default: 8 MiB of its own). */
  locationCache?: BudgetCache<Digest, RemoteLocation>;
  /** Largest ranged GET a run of adjacent records is read with (default 8 MiB). */
  readRunBytes?: number;
  /** Worker threads that compress new chunks and decompress and verify reads (default 2; 0 = inline). */
  workers?: number;
  /** How chunks read back are checked (chunk-codec.ts; default 'checksum'). */
  readCheck?: ReadCheck;
  /**
   * Keeps the packs this store put as local files here (pack-file-cache.ts),
   * up to packCacheBytes (default 1 GiB), so reads of what it just wrote skip
   * the ranged GETs. Default: no such cache.
   */
  packCacheDir?: string;
  packCacheBytes?: number;
  /** With packCacheDir: bytes of records read at random (ReadHint.keep) kept there too (default 512 MiB; 0: kept in memory instead). */
  keptReadBytes?: number;
}

/** A chunk written to a segment whose rows are not committed yet. */
export interface SpooledChunk {
  state: 'spooled';
  seg: SpoolSegment;
  offset: number;
  length: number;
}

export type PendingChunk = QueuedChunk | SpooledChunk;

/** Digests per catalog call (lookups, durable checks, touches). */
export const CALL_BATCH = 4096;

export function slices<T>(xs: T[], n = CALL_BATCH): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n));
  return out;
}

export class RemoteChunkReads {
  /** Where packs are put and read (the bucket, through the local pack cache when there is one). */
  readonly driver: PackDriver;
  /** The bucket itself (verify checks what is there, not a local copy). */
  readonly bucket: PackDriver;
  readonly catalog: ChunkCatalog;
  protected readonly codec: ChunkCodec;
  /** Encoding of new chunks and decoding of reads on worker threads. */
  protected readonly codecs: CodecPool;
  /** Where recently read chunks are (stale after a compaction: a read that finds the pack gone locates again). */
  private readonly locations: BudgetCache<Digest, RemoteLocation>;
  protected readonly reader: RemoteRecordReader;
  /** Chunks this store holds but has not recorded in the catalog. */
  protected readonly pending = new Map<Digest, PendingChunk>();

  constructor(opts: RemoteReadOptions) {
    this.bucket = opts.driver;
    const local = opts.packCacheDir ? new PackFileCache(opts.driver, opts.packCacheDir, opts.packCacheBytes, opts.keptReadBytes) : null;
    this.driver = local ?? opts.driver;
    this.catalog = opts.catalog;
    this.codec = new ChunkCodec(opts.level ?? DEFAULT_LEVEL, opts.readCheck ?? DEFAULT_READ_CHECK);
    this.codecs = new CodecPool(this.codec.level, opts.workers ?? 2, this.codec.readCheck);
    this.locations = opts.locationCache ?? new MemoryBudget(8 * 1024 * 1024).cache('remote-locations', locationBytes);
    this.reader = new RemoteRecordReader(this.driver, { cacheBytes: opts.readCacheBytes, cache: opts.readCache, runBytes: opts.readRunBytes, driverKeeps: local?.keepsReads === true });
  }

  toString(): string {
    return `remote:${this.driver.location}+${this.catalog.location}`;
  }

  // ---- reads ----

  async has(digest: Digest): Promise<boolean> {
    if (this.pending.has(digest)) return true;
    return (await this.catalog.lookup([rawOf(digest)]))[0] != null;
  }

  async durable(digest: Digest): Promise<boolean> {
    return (await this.missingDurable([rawOf(digest)])).length === 0;
  }

  async missingDurable(raws: Uint8Array[]): Promise<number[]> {
    const out: number[] = [];
    let base = 0;
    for (const part of slices(raws)) {
      (await this.catalog.lookup(part)).forEach((e, i) => {
        if (e == null) out.push(base + i);
      });
      base += part.length;
    }
    return out;
  }

  /**
   * Stored forms, in the order asked: pending chunks from memory or their
   * segment, the others from their packs. A pack gone since the lookup
   * (compaction moved its records) is located again, once.
   */
  protected async storedOf(digests: Digest[], opts: FetchOptions = {}): Promise<Buffer[]> {
    const out: Buffer[] = new Array(digests.length);
    const remote: number[] = [];
    const spooled: Array<Promise<void>> = [];
    digests.forEach((d, i) => {
      const p = this.pending.get(d);
      if (!p) remote.push(i);
      else if (p.state === 'queued') out[i] = this.codec.encode(p.raw);
      else {
        const { seg, offset, length } = p;
        spooled.push(seg.read(offset, RECORD_HEADER_SIZE + length).then((rec) => void (out[i] = storedOfRecord(rec, 0, d, { pack: seg.name, offset, length }))));
      }
    });
    await Promise.all(spooled);
    if (remote.length === 0) return out;
    const ds = remote.map((i) => digests[i]!);
    let got: Buffer[];
    try {
      got = await this.reader.fetch(ds, await this.locate(ds, false), opts);
    } catch (e) {
      if (!isSnapyardError(e, 'NOT_FOUND')) throw e;
      got = await this.reader.fetch(ds, await this.locate(ds, true), opts);
    }
    remote.forEach((i, k) => (out[i] = got[k]!));
    return out;
  }

  /**
   * Where chunks are: from the location cache, the rest in one catalog
   * lookup per CALL_BATCH. `fresh`: the cache is bypassed and refreshed (a
   * pack named there is gone: compaction moved its records).
   */
  /** Locates chunks about to be read one by one, in one catalog call per CALL_BATCH (remembered in the location cache). */
  async prepareReads(digests: Digest[]): Promise<void> {
    await this.lookupLocations(digests.filter((d) => !this.pending.has(d) && !this.locations.has(d)));
  }

  /** Forgets what is cached of a chunk (its record turned out corrupt, or it was removed). */
  protected forget(d: Digest): void {
    this.reader.forget(d);
    this.locations.delete(d);
  }

  private async locate(digests: Digest[], fresh: boolean): Promise<RemoteLocation[]> {
    const out: RemoteLocation[] = new Array(digests.length);
    const ask: number[] = [];
    digests.forEach((d, i) => {
      const hit = fresh ? undefined : this.locations.get(d);
      if (hit) out[i] = hit;
      else ask.push(i);
    });
    const found = await this.lookupLocations(ask.map((i) => digests[i]!));
    ask.forEach((i, k) => {
      if (!found[k]) throw new ChunkMissingError(digests[i]!);
      out[i] = found[k];
    });
    return out;
  }

  /** Looks digests up in the catalog (CALL_BATCH per call) and remembers where the held ones are; undefined for the others. */
  private async lookupLocations(digests: Digest[]): Promise<Array<RemoteLocation | undefined>> {
    const out: Array<RemoteLocation | undefined> = [];
    for (const part of slices(digests)) {
      (await this.catalog.lookup(part.map(rawOf))).forEach((e, i) => {
        if (e == null) return void out.push(undefined);
        const loc = { pack: e.pack, offset: e.offset, length: e.length };
        this.locations.set(part[i]!, loc);
        out.push(loc);
      });
    }
    return out;
  }

  private decode(stored: Buffer, d: Digest, target?: Buffer, at?: number): Buffer {
    try {
      return this.codec.decodeRead(stored, d, target, at);
    } catch (e) {
      this.forget(d);
      throw e;
    }
  }

  async get(digest: Digest): Promise<Buffer> {
    const [stored] = await this.storedOf([digest]);
    return Buffer.from(this.decode(stored!, digest));
  }

  /** A run of chunks, end to end: a stream's read (a blob GET, a rebuild), so its records are not kept in the read cache. */
  async getConcat(digests: Digest[], lengths: number[]): Promise<Buffer> {
    return this.decoded(digests, (stored) => this.codecs.decodeConcat(stored, digests, lengths), { keep: false });
  }

  /** A digester of a whole stream on the codec workers (a push's commit hashes the rebuilt blob there). */
  digester(): StreamDigester {
    return this.codecs.digester() ?? localDigester();
  }

  /** A getConcat result the caller is done with: its buffer is reused for the next batches. */
  release(buf: Uint8Array): void {
    this.codecs.release(buf);
  }

  scratch(bytes: number): Buffer | null {
    return this.codecs.scratch(bytes);
  }

  /** Runs `fn` (decoding on the codec workers) on the chunks' stored forms; a chunk found corrupt is forgotten, so the next read fetches it again. */
  protected async decoded<T>(digests: Digest[], fn: (stored: Buffer[]) => Promise<T>, opts: FetchOptions = {}): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const stored = await this.storedOf(digests, opts);
      try {
        return await fn(stored);
      } catch (e) {
        if (!(e instanceof ChunkCorruptError)) throw e;
        this.forget(e.digest as Digest);
        // Read again, once, from where the catalog says: the bad form may have come from a cache (a record
        // read ahead, unverified, that has since been quarantined and stored again elsewhere).
        if (attempt >= 1) throw e;
      }
    }
  }

  async getStored(digest: Digest): Promise<Buffer> {
    return (await this.storedOf([digest]))[0]!;
  }
}

/** An estimate of a cached location's memory (key, object, pack name), for the cache budget. */
export function locationBytes(loc: RemoteLocation, d: Digest): number {
  return 2 * d.length + 2 * loc.pack.length + 96;
}

import { join } from 'node:path';
import { ChunkCodec, type ReadCheck } from './chunk-codec.js';
import type { AddResult, ChunkWriter } from './chunk-store.js';
import { digestFromRaw, localDigester, rawOf, sha256Raw, type Digest, type StreamDigester } from '../digest.js';
import { ChunkMissingError, isDiskFull, SnapyardError, storageFailure } from '../errors.js';
import { ensureLayout, packPath, PackReader, PackWriter, readConcat, RECORD_HEADER_SIZE, type RecordLocation } from './pack-files.js';
import { PackIndex } from './pack-index.js';
import { WorkerPool } from '../worker-pool.js';
import { reviveChunkError } from './codec-pool.js';
import type { ChunkTask, ChunkTaskResult } from './chunk-worker.js';
import { workerDigester } from './worker-digester.js';
import { batchWriter, type AddedRow, type Pending } from './batch-writer.js';
import { mapSliced } from '../time-slice.js';
import { BATCH_BUFFER_BYTES, SpareBuffers } from './spare-buffers.js';

export interface LocalChunkStoreOptions {
  /** Directory of the store (layout: pack-files.ts). */
  root: string;
  /**
   * zstd level for new chunks (default 1: measured on the bench corpus base
   * image, level 3 stores 2.6% less but ingests ~25% slower, since compression
   * is most of ingest's CPU; compaction may recompress harder later).
   */
  level?: number;
  /** Worker threads for compression and reads (default 2; 0 = inline on the caller's thread). */
  workers?: number;
  /** How chunks read back are checked (chunk-codec.ts; default 'checksum'). */
  readCheck?: ReadCheck;
  now?: () => number;
}

export const DEFAULT_LEVEL = 1;
/** Reads check zstd's frame checksum where there is one (chunk-codec.ts); `verify` re-hashes. */
export const DEFAULT_READ_CHECK: ReadCheck = 'checksum';

/**
 * A chunk store on local disk, its reads and writes: chunks appended to pack
 * files, located through a SQLite index (layout: pack-files.ts). This thread
 * hashes and dedups (so a chunk already held costs a hash and a lookup);
 * worker threads compress, append, read and verify. Its maintenance (gc,
 * compaction, verify, stats) is LocalChunkStore's (local-chunk-store.ts).
 */
export class LocalChunkCore {
  readonly root: string;
  protected readonly codec: ChunkCodec;
  protected readonly index: PackIndex;
  protected readonly pool: WorkerPool<ChunkTask, ChunkTaskResult> | null;
  protected readonly inlineWriter: PackWriter | null;
  protected readonly reader: PackReader;
  protected readonly now: () => number;
  /** Chunks handed to a writer whose index row is not committed yet. */
  protected readonly pending = new Map<Digest, Pending>();
  private added: AddedRow[] = [];
  private touched: Digest[] = [];
  private readonly freeBuffers: Buffer[] = [];

  /** Largest chunk a batch buffer must hold besides BATCH_BYTES. */
  private readonly maxChunk = 256 * 1024;

  constructor(opts: LocalChunkStoreOptions) {
    this.root = opts.root;
    const level = opts.level ?? DEFAULT_LEVEL;
    this.now = opts.now ?? Date.now;
    const readCheck = opts.readCheck ?? DEFAULT_READ_CHECK;
    this.codec = new ChunkCodec(level, readCheck);
    ensureLayout(this.root);
    this.index = new PackIndex(join(this.root, 'index.db'));
    this.reader = new PackReader(this.root);
    const workers = opts.workers ?? 2;
    if (workers > 0) {
      const url = new URL(import.meta.url.endsWith('.ts') ? './chunk-worker.ts' : './chunk-worker.js', import.meta.url);
      this.pool = new WorkerPool(url, workers, { root: this.root, level, readCheck }, reviveChunkError);
      this.inlineWriter = null;
    } else {
      this.pool = null;
      this.inlineWriter = new PackWriter(this.root, `p${process.pid}-main`);
    }
  }

  toString(): string {
    return `local:${this.root}`;
  }

  async has(digest: Digest): Promise<boolean> {
    return this.pending.has(digest) || this.index.has(digest);
  }

  private locate(digest: Digest): RecordLocation | Promise<RecordLocation> {
    const p = this.pending.get(digest);
    if (p) return p.done;
    const row = this.index.locate(digest);
    if (!row) throw new ChunkMissingError(digest);
    return row;
  }

  /**
   * Runs a read; if it fails on a pack that compaction has since removed (the
   * reader located the chunk before the index row moved), locates again and
   * retries once.
   */
  protected async retryMoved<T>(digests: Digest[], read: (locs: RecordLocation[]) => Promise<T>): Promise<T> {
    const locs = await Promise.all(digests.map((d) => this.locate(d)));
    try {
      return await read(locs);
    } catch (e) {
      if (!(e instanceof SnapyardError) || !locs.some((l) => this.movedPacks.has(l.pack))) throw e;
      return read(await Promise.all(digests.map((d) => this.locate(d))));
    }
  }

  async getStored(digest: Digest): Promise<Buffer> {
    return this.retryMoved([digest], async ([loc]) => this.reader.readStored(digest, loc!));
  }

  async get(digest: Digest): Promise<Buffer> {
    return this.retryMoved([digest], async ([loc]) => {
      if (!this.pool) return this.reader.readRaw(this.codec, digest, loc!);
      const { data } = (await this.pool.run({ op: 'read', digest, loc: loc! })) as { data: Uint8Array };
      return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    });
  }

  /**
   * getConcat on this thread, without a worker round trip: for small reads
   * whose latency matters more than the event loop's few hundred µs
   * (a lazy mount's, client/lazy/cached-chunks.ts). Same checks. With
   * `into` (a scratch() buffer, say) large enough, the bytes are decoded there.
   */
  async getConcatHere(digests: Digest[], lengths: number[], into?: Buffer): Promise<Buffer> {
    return this.retryMoved(digests, async (locs) => readConcat(this.reader, this.codec, digests, locs, lengths, into));
  }

  /** Reusable read buffers, by size (a 2 MiB batch plus a largest chunk at most; 16 of those in all). */
  private readonly readBuffers = new SpareBuffers(BATCH_BUFFER_BYTES, 16 * BATCH_BUFFER_BYTES);

  async getConcat(digests: Digest[], lengths: number[]): Promise<Buffer> {
    return this.retryMoved(digests, (locs) => this.readConcatAt(digests, locs, lengths));
  }

  private async readConcatAt(digests: Digest[], locs: RecordLocation[], lengths: number[]): Promise<Buffer> {
    if (!this.pool) return readConcat(this.reader, this.codec, digests, locs, lengths);
    let total = 0;
    for (const l of lengths) total += l;
    const spare = this.readBuffers.take(total);
    const into = spare ? new Uint8Array(spare) : undefined;
    const { data } = (await this.pool.run(
      into ? { op: 'readMany', digests, locs, lengths, into } : { op: 'readMany', digests, locs, lengths },
      into ? [spare!] : [],
    )) as { data: Uint8Array };
    return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  }

  scratch(bytes: number): Buffer | null {
    const ab = this.readBuffers.take(bytes);
    return ab ? Buffer.from(ab, 0, bytes) : null;
  }

  release(buf: Uint8Array): void {
    this.readBuffers.give(buf.buffer);
  }

  async add(raw: Uint8Array): Promise<AddResult> {
    return this.store(digestFromRaw(sha256Raw(raw)), raw);
  }

  async put(digest: Digest, raw: Uint8Array): Promise<AddResult> {
    const actual = digestFromRaw(sha256Raw(raw));
    if (actual !== digest) throw new SnapyardError('DIGEST_MISMATCH', `chunk content hashes to ${actual}, not ${digest}`);
    return this.store(digest, raw);
  }

  private async store(digest: Digest, raw: Uint8Array): Promise<AddResult> {
    const size = raw.byteLength;
    const known = this.known(digest, rawOf(digest));
    if (known !== null) {
      let storedLength: number;
      if (typeof known === 'number') storedLength = known;
      else {
        known.kick?.();
        storedLength = (await known.done).length;
      }
      return { digest, size, written: false, storedSize: storedLength + RECORD_HEADER_SIZE };
    }
    const done = this.append(digest, raw);
    this.pending.set(digest, { done });
    let loc: RecordLocation;
    try {
      loc = await done;
    } catch (e) {
      this.pending.delete(digest);
      throw e;
    }
    this.added.push({ digest, loc, rawLength: size });
    this.scheduleCommit();
    return { digest, size, written: true, storedSize: loc.length + RECORD_HEADER_SIZE };
  }

  /** The chunk is held (its stored length; its time is refreshed), on its way (`Pending`), or unknown (null). */
  private known(digest: Digest, raw32: Uint8Array): number | Pending | null {
    const p = this.pending.get(digest);
    if (p) {
      this.seen?.add(digest);
      return p;
    }
    const storedLength = this.index.storedLength(digest, raw32);
    if (storedLength === null) return null;
    this.seen?.add(digest);
    this.touched.push(digest);
    this.scheduleCommit();
    return storedLength;
  }

  private streams = 0;
  private readonly hashBuffers: Buffer[] = [];

  /** Hashes a stream on a worker thread (worker-digester.ts). */
  digester(): StreamDigester {
    if (!this.pool) return localDigester();
    return workerDigester(this.pool, ++this.streams, this.hashBuffers);
  }

  writer(): ChunkWriter {
    if (!this.pool) {
      let newChunks = 0;
      let newStoredBytes = 0;
      return {
        add: async (raw) => {
          const r = await this.add(raw);
          if (r.written) {
            newChunks++;
            newStoredBytes += r.storedSize;
          }
          return { digest: r.digest, written: r.written };
        },
        finish: async () => ({ newChunks, newStoredBytes }),
      };
    }
    return batchWriter({
      pool: this.pool,
      pending: this.pending,
      known: (d, raw32) => this.known(d, raw32),
      added: (row) => {
        this.added.push(row);
        this.scheduleCommit();
      },
      freeBuffers: this.freeBuffers,
      maxChunk: this.maxChunk,
    });
  }

  private async append(digest: Digest, raw: Uint8Array): Promise<RecordLocation> {
    if (!this.pool) return this.inlineWriter!.append(digest, this.codec.encode(raw));
    const own = new Uint8Array(raw); // the worker gets a copy of its own, moved rather than cloned
    const r = (await this.pool.run({ op: 'append', digest, raw: own }, [own.buffer as ArrayBuffer])) as { loc: RecordLocation };
    return r.loc;
  }

  /**
   * Index rows are committed only after the packs holding their records are
   * fsync'ed (flush), so the index never names bytes a power loss could take;
   * until then chunks are found through `pending`. Large runs flush on the way.
   */
  private scheduleCommit(): void {
    if (this.added.length + this.touched.length >= 8192 && !this.flushing) {
      this.flushing = this.flush().finally(() => (this.flushing = null));
      this.flushing.catch(() => {}); // retried by the next flush, which reports it
    }
  }

  private flushing: Promise<void> | null = null;
  /** Flushes run one after another: when flush() resolves, every row added before the call is committed. */
  private flushTail: Promise<void> = Promise.resolve();

  /**
   * Makes every chunk added so far durable: packs fsync'ed, then their index
   * rows committed. When either step fails (a full disk), the rows stay queued
   * for the next flush and their chunks stay pending: they are never counted
   * as stored (durable()) until a flush commits them.
   */
  flush(): Promise<void> {
    const run = this.flushTail.then(() => this.flushOnce());
    this.flushTail = run.catch(() => {});
    return run;
  }

  private async flushOnce(): Promise<void> {
    // Only rows whose records are written (callers finish their own writers
    // first). Waiting for every pending chunk would tie one push to another's
    // batch, which may wait for a stalled client.
    const added = this.added.splice(0);
    const touched = this.touched.splice(0);
    try {
      if (this.pool) await this.pool.broadcast({ op: 'sync' });
      else await this.inlineWriter!.sync();
      if (added.length > 0 || touched.length > 0) this.index.commit(added, touched, this.now());
    } catch (e) {
      this.added.unshift(...added);
      this.touched.unshift(...touched);
      throw storageFailure(e) ?? e;
    }
    for (const a of added) this.pending.delete(a.digest);
  }

  /**
   * A flush for readers that only want what is committed to be current
   * (verify, listings): on a full disk the rows stay queued and this is not
   * an error (a failed flush never makes anything look stored).
   */
  async flushIfRoom(): Promise<void> {
    try {
      await this.flush();
    } catch (e) {
      if (!isDiskFull(e)) throw e;
    }
  }

  /** The chunk's index row is committed (its record fsync'ed): what a blob commit may rely on. */
  async durable(digest: Digest): Promise<boolean> {
    return this.index.has(digest);
  }

  async missingDurable(raws: Uint8Array[]): Promise<number[]> {
    const held = await mapSliced(raws, (r) => this.index.hasRaw(r));
    const out: number[] = [];
    held.forEach((h, i) => h || out.push(i));
    return out;
  }

  async *list(): AsyncIterable<{ digest: Digest; storedSize: number; mtimeMs: number }> {
    await this.flush();
    for (const c of this.index.all()) yield { digest: c.digest, storedSize: c.length + RECORD_HEADER_SIZE, mtimeMs: c.mtimeMs };
  }

  async remove(digest: Digest): Promise<void> {
    await this.flush();
    this.index.remove(digest);
  }

  /**
   * Batched lookups for the compact index of a push. A chunk found while gc
   * marks is remembered by its write barrier (as a writer's dedup hit is), so
   * the sweep keeps what a client was just told the store holds.
   */
  async rawLengths(raws: Uint8Array[]): Promise<Array<number | null>> {
    return mapSliced(raws, (r) => {
      const d = digestFromRaw(r);
      const n = this.index.rawLength(d);
      if (n !== null) this.seen?.add(d);
      return n;
    });
  }

  async resolvePrefixes(prefixes: Uint8Array[]): Promise<Array<Buffer | null | 'ambiguous'>> {
    return mapSliced(prefixes, (p) => {
      const hit = this.index.resolvePrefix(Buffer.from(p.buffer, p.byteOffset, p.byteLength));
      if (hit instanceof Buffer) this.seen?.add(digestFromRaw(hit));
      return hit;
    });
  }

  /** Where a committed chunk's stored bytes are on disk (for verify, repair and tests). */
  where(digest: Digest): { path: string; offset: number; length: number } | null {
    const row = this.index.get(digest);
    return row ? { path: packPath(this.root, row.pack), offset: row.offset + RECORD_HEADER_SIZE, length: row.length } : null;
  }

  /** Stored bytes (records, as in stats()) of committed chunks given by raw digest; null for ones not held. */
  async storedLengths(raws: Uint8Array[]): Promise<Array<number | null>> {
    return this.storedLengthsNow(raws);
  }

  /** storedLengths, synchronously (callers in this process that need it in one step: the client cache's eviction). */
  storedLengthsNow(raws: Uint8Array[]): Array<number | null> {
    return this.index.storedLengths(raws).map((n) => (n === null ? null : n + RECORD_HEADER_SIZE));
  }

  /** Packs compaction removed: a read that fails on one of them is retried at the chunk's new place. */
  protected readonly movedPacks = new Set<string>();
  /**
   * GC's write barrier: while a collection runs, every chunk a writer finds
   * already held (dedup) is remembered here and survives the sweep, even if
   * the writer has not pinned it yet.
   */
  protected seen: Set<Digest> | null = null;

  /**
   * Commits what it can and closes. On a full disk the rows still queued are
   * dropped: nothing committed references their chunks (a blob commit needs
   * them durable), so they are dead space in their packs, never data lost.
   */
  async close(): Promise<void> {
    try {
      await this.flushIfRoom();
    } finally {
      await this.pool?.close();
      await this.inlineWriter?.close();
      this.reader.close();
      this.index.close();
    }
  }
}

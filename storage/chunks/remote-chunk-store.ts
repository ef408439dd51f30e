/**
 * A chunk store over a PackDriver (pack bytes: S3, or a directory) and a
 * ChunkCatalog (where each chunk is: PostgreSQL shared by the replicas of a
 * registry, or SQLite). Several stores (replicas) may share one bucket prefix
 * and one catalog: each writes packs of its own and finds the others' chunks
 * through the catalog.
 *
 * Write path: a chunk is hashed, deduped against the chunks pending here and
 * the catalog (a writer looks up a batch per round trip: remote-chunk-writer.ts),
 * encoded as the local store encodes it (chunk-codec.ts), and its record
 * (pack-files.ts format: packs move between stores as they are) appended to an
 * open segment file in the spool directory (remote-chunk-spool.ts). flush()
 * seals the segment, puts it whole to the driver as a pack, commits
 * its rows and the touches of chunks found held to the catalog, then deletes
 * the spool file. A segment also seals when it reaches `segmentBytes`, and is
 * then put in the background. Until its rows are committed a chunk is read
 * from its segment, counts for has() but not for durable()/missingDurable().
 *
 * A chunk found held is touched at the next flush; if the catalog answers it
 * absent (gc swept it since the lookup), its record is copied from where the
 * lookup found it into a new pack in the same flush; when that record is gone
 * too, the chunk is not held (missingDurable says so, and adding it again
 * writes it).
 *
 * Crash safety: a crash before the put leaves a spool file (deleted at the next
 * start: its chunks were never recorded); between put and commit, a pack no row
 * names (dead space for compaction); a row is never committed before its
 * bytes are in the driver.
 *
 * Read path: remote-chunk-base.ts.
 */
import type { AddResult, ChunkStore, ChunkWriter, PrunableChunkStore } from './chunk-store.js';
import { hexKey, type CatalogEntry, type NewCatalogEntry } from './chunk-catalog.js';
import { RECORD_HEADER_SIZE } from './pack-files.js';
import { digestFromRaw, rawOf, sha256Raw, type Digest } from '../digest.js';
import { isSnapyardError, SnapyardError } from '../errors.js';
import { defaultWriterId, Segments, Spool, storedRecords, type Records } from './remote-chunk-spool.js';
import { remoteWriter, type QueuedChunk } from './remote-chunk-writer.js';
import { CALL_BATCH, RemoteChunkReads, slices, type RemoteReadOptions } from './remote-chunk-base.js';

export { locationBytes } from './remote-chunk-base.js';

export interface RemoteChunkStoreOptions extends RemoteReadOptions {
  /** Where open segments are written; owned by this store (leftovers are deleted when it opens). */
  spoolDir: string;
  /** A segment is sealed and put once it reaches this size (default 64 MiB). */
  segmentBytes?: number;
  now?: () => number;
  /** Goes into pack names (lower-case letters, digits, '-'; default: pid and random). Unique per live store. */
  writerId?: string;
}

export class RemoteChunkStore extends RemoteChunkReads implements ChunkStore, PrunableChunkStore {
  protected readonly now: () => number;
  /** Chunks found held since the last flush (refreshed then), with where the lookup found them. */
  protected touched = new Map<string, { raw: Buffer; entry: CatalogEntry }>();
  protected readonly segments: Segments;
  protected readonly spool: Spool;
  protected readonly segmentBytes: number;
  /** Segments left by a previous run that opening the spool deleted. */
  readonly cleanedSegments: number;

  constructor(opts: RemoteChunkStoreOptions) {
    super(opts);
    this.now = opts.now ?? Date.now;
    const spool = (this.spool = new Spool(opts.spoolDir, opts.writerId ?? defaultWriterId(), () => this.codecs.md5Digester()));
    this.cleanedSegments = spool.clean();
    this.segmentBytes = opts.segmentBytes ?? 64 * 1024 * 1024;
    this.segments = new Segments(spool, this.segmentBytes);
  }

  // ---- writes ----

  async add(raw: Uint8Array): Promise<AddResult> {
    const raw32 = sha256Raw(raw);
    return this.store(digestFromRaw(raw32), raw32, raw);
  }

  async put(digest: Digest, raw: Uint8Array): Promise<AddResult> {
    const raw32 = sha256Raw(raw);
    const actual = digestFromRaw(raw32);
    if (actual !== digest) throw new SnapyardError('DIGEST_MISMATCH', `chunk content hashes to ${actual}, not ${digest}`);
    return this.store(digest, raw32, raw);
  }

  /** One chunk: a batch of one (one lookup). */
  private async store(digest: Digest, raw32: Buffer, raw: Uint8Array): Promise<AddResult> {
    const size = raw.byteLength;
    let p = this.pending.get(digest);
    if (p?.state === 'queued') {
      p.kick();
      await p.done;
      p = this.pending.get(digest);
    }
    if (p?.state === 'spooled') return { digest, size, written: false, storedSize: RECORD_HEADER_SIZE + p.length };
    const q = this.queue(digest, raw32, Buffer.from(raw), () => {});
    let sizes: Array<number | null>;
    try {
      sizes = await this.place([q], await this.catalog.lookup([raw32]));
    } catch (e) {
      this.settle([q], e);
      throw e;
    }
    this.settle([q]);
    if (sizes[0] !== null) return { digest, size, written: true, storedSize: sizes[0]! };
    const held = this.touched.get(hexKey(raw32));
    return { digest, size, written: false, storedSize: RECORD_HEADER_SIZE + (held?.entry.length ?? 0) };
  }

  writer(): ChunkWriter {
    return remoteWriter({
      pending: this.pending,
      queue: (d, raw32, raw, kick) => this.queue(d, raw32, raw, kick),
      lookup: (b) => this.catalog.lookup(b.map((q) => q.raw32)),
      place: (b, e) => this.place(b, e),
      settle: (b, e) => this.settle(b, e),
      verify: (items) => this.codecs.decodeConcat(items.map((i) => i.stored), items.map((i) => i.digest), items.map((i) => i.rawLength), true),
    });
  }

  private readonly settlers = new WeakMap<QueuedChunk, (e?: unknown) => void>();

  private queue(digest: Digest, raw32: Buffer, raw: Buffer, kick: () => void): QueuedChunk {
    let settle!: (e?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => (settle = (e) => (e === undefined ? resolve() : reject(e))));
    done.catch(() => {});
    const q: QueuedChunk = { state: 'queued', digest, raw32, raw, done, kick };
    this.settlers.set(q, settle);
    this.pending.set(digest, q);
    return q;
  }

  private settle(batch: QueuedChunk[], error?: unknown): void {
    for (const q of batch) {
      if (error !== undefined && this.pending.get(q.digest) === q) this.pending.delete(q.digest);
      this.settlers.get(q)?.(error);
    }
  }

  /** After a batch's lookup: touches the held chunks and spools the others; answers each one's stored bytes, null when held. */
  private async place(batch: QueuedChunk[], entries: Array<CatalogEntry | null>): Promise<Array<number | null>> {
    const fresh: QueuedChunk[] = [];
    batch.forEach((q, i) => {
      const e = entries[i];
      if (e == null) return void fresh.push(q);
      this.touched.set(hexKey(q.raw32), { raw: q.raw32, entry: e });
      if (this.pending.get(q.digest) === q) this.pending.delete(q.digest);
    });
    // Chunks that came in their stored form (a push's records) are spooled as they came; the others are encoded.
    const asStored = fresh.filter((q) => q.stored);
    const toEncode = fresh.filter((q) => !q.stored);
    const written = new Map<QueuedChunk, number>();
    for (const [group, recs] of [
      [asStored, storedRecords(asStored.map((q) => ({ digest: q.digest, stored: q.stored! })))],
      [toEncode, await this.codecs.encodeRecords(toEncode)],
    ] as Array<[QueuedChunk[], Records]>) {
      if (group.length === 0) continue;
      this.spoolRecords(group.map((q) => ({ digest: q.digest, raw32: q.raw32, rawLength: q.raw.byteLength })), recs);
      group.forEach((q, i) => written.set(q, RECORD_HEADER_SIZE + recs.lengths[i]!));
    }
    await this.segments.drain();
    return batch.map((q) => written.get(q) ?? null);
  }

  /** Appends records to the spool; each chunk is pending at its place from then on. Sealed segments are put in the background. */
  private spoolRecords(items: Array<{ digest: Digest; raw32: Buffer; rawLength: number }>, recs: Records): void {
    this.segments.append(items, recs, (i, seg, offset, length) => this.pending.set(items[i]!.digest, { state: 'spooled', seg, offset, length }));
    if (this.segments.sealed.length > 0) this.uploadInBackground();
  }

  // ---- flush ----

  /** Flushes run one after another: when flush() resolves, every chunk stored before the call is in the catalog. */
  private tail: Promise<void> = Promise.resolve();
  private uploading = false;

  private serial(step: () => Promise<void>): Promise<void> {
    const run = this.tail.then(step);
    this.tail = run.catch(() => {});
    return run;
  }

  /** Puts and commits the segments sealed so far, without waiting for a flush (errors are reported by the next flush, which retries). */
  private uploadInBackground(): void {
    if (this.uploading) return;
    this.uploading = true;
    this.serial(() => this.uploadSealed())
      .catch(() => {})
      .finally(() => (this.uploading = false));
  }

  flush(): Promise<void> {
    return this.serial(async () => {
      // Twice at most: the second round writes the records of touched chunks gc swept meanwhile.
      for (let round = 0; round < 2; round++) {
        this.segments.sealOpen();
        await this.uploadSealed();
        if (!(await this.commitTouches())) return;
      }
      this.segments.sealOpen();
      await this.uploadSealed();
    });
  }

  /** For each sealed segment, oldest first: put it, commit its rows, delete its spool file. */
  private async uploadSealed(): Promise<void> {
    while (this.segments.sealed.length > 0) {
      const seg = await this.segments.putOldest(this.driver);
      for (const part of slices(seg.rows)) {
        await this.catalog.commit(part.map((r): NewCatalogEntry => ({ ...r, pack: seg.name })), [], this.now());
      }
      for (const r of seg.rows) {
        const d = digestFromRaw(r.raw);
        const p = this.pending.get(d);
        if (p?.state === 'spooled' && p.seg === seg) this.pending.delete(d);
      }
      this.segments.sealed.shift();
      seg.remove();
    }
  }

  /**
   * Refreshes the time of the chunks found held; the ones gc swept since
   * (answered absent) are copied from where they were found into the open
   * segment. Answers whether any was copied (they need another upload).
   */
  private async commitTouches(): Promise<boolean> {
    const touched = [...this.touched.values()];
    this.touched = new Map();
    const absent: Array<{ raw: Buffer; entry: CatalogEntry }> = [];
    for (let i = 0; i < touched.length; i += CALL_BATCH) {
      const part = touched.slice(i, i + CALL_BATCH);
      let r: { absent: number[] };
      try {
        r = await this.catalog.commit([], part.map((t) => t.raw), this.now());
      } catch (e) {
        for (const t of touched.slice(i)) this.touched.set(hexKey(t.raw), t);
        throw e;
      }
      for (const k of r.absent) absent.push(part[k]!);
    }
    return (await this.rescue(absent)) > 0;
  }

  /** Copies the records of swept chunks (verified) into the open segment; a record gone too leaves its chunk not held. */
  private async rescue(swept: Array<{ raw: Buffer; entry: CatalogEntry }>): Promise<number> {
    const items: Array<{ digest: Digest; raw32: Buffer; rawLength: number; stored: Buffer }> = [];
    for (const { raw, entry } of swept) {
      const digest = digestFromRaw(raw);
      if (this.pending.has(digest)) continue; // written again here meanwhile
      let stored: Buffer;
      try {
        stored = (await this.reader.fetch([digest], [entry]))[0]!;
        this.codec.decode(stored, digest);
      } catch (e) {
        if (isSnapyardError(e, 'NOT_FOUND') || isSnapyardError(e, 'CHUNK_CORRUPT')) continue;
        throw e;
      }
      items.push({ digest, raw32: raw, rawLength: entry.rawLength, stored });
    }
    if (items.length > 0) this.spoolRecords(items, storedRecords(items));
    return items.length;
  }

  // ---- enumeration, removal, close ----

  async *list(): AsyncIterable<{ digest: Digest; storedSize: number; mtimeMs: number }> {
    await this.flush();
    for await (const c of this.catalog.all()) yield { digest: digestFromRaw(c.raw), storedSize: c.length + RECORD_HEADER_SIZE, mtimeMs: c.mtimeMs };
  }

  async remove(digest: Digest): Promise<void> {
    await this.flush();
    this.forget(digest);
    await this.catalog.remove([rawOf(digest)]);
  }

  /** Chunks written here and not yet in the catalog, and segments waiting for their put. */
  spoolStats(): { pendingChunks: number; sealedSegments: number; openSegmentBytes: number } {
    return { pendingChunks: this.pending.size, sealedSegments: this.segments.sealed.length, openSegmentBytes: this.segments.open?.size ?? 0 };
  }

  /**
   * Flushes what it can, then closes the driver and the catalog. Segments
   * that could not be put are deleted (nothing recorded names their chunks);
   * a flush error is reported after closing.
   */
  async close(): Promise<void> {
    let failure: unknown;
    try {
      await this.flush();
    } catch (e) {
      failure = e;
    }
    this.segments.discard();
    this.pending.clear();
    await Promise.allSettled([this.driver.close(), this.catalog.close(), this.codecs.close()]);
    if (failure !== undefined) throw failure;
  }
}

import { ChunkCodec, decodeConcat, type ReadCheck } from './chunk-codec.js';
import { ChunkCorruptError, SnapyardError, storageFailure } from '../errors.js';
import type { Digest, StreamDigester } from '../digest.js';
import { workerDigester } from './worker-digester.js';
import { WorkerPool, type WorkerError } from '../worker-pool.js';
import { checkNames, encodeRecords, type Records } from './remote-chunk-spool.js';
import { encodeSketch, sketch } from '../delta/resemblance.js';
import { compressWithDict } from '../delta/dict-codec.js';
import type { CodecResult, CodecTask } from './codec-worker.js';
import { encodeFileChunks, FileRangeReader, type FileChunks } from './file-ranges.js';
import { BATCH_BUFFER_BYTES, SpareBuffers } from './spare-buffers.js';

/** A worker's error as the typed error it was (a full disk, a corrupt chunk), else INTERNAL. */
export function reviveChunkError(e: WorkerError): Error {
  const full = storageFailure(e);
  if (full) return full;
  if (e.code === 'CHUNK_CORRUPT' && e.digest) {
    return new ChunkCorruptError(e.digest as Digest, e.message.replace(/^chunk \S+ is corrupt: /, ''));
  }
  return new SnapyardError('INTERNAL', e.message);
}

/** The tasks that carry their data in a buffer (all but stream hashing, which workerDigester sends). */
type BufferTask = Exclude<CodecTask, { op: 'hash' | 'encodeFile' | 'closeFiles' }>;

/** Below this many bytes a task runs inline: a worker's round trip would cost more than it saves. */
const INLINE_BYTES = 256 * 1024;
/** The largest reused buffer (blob reads decode batches of about 2 MiB). */
const SPARE_BYTES = BATCH_BUFFER_BYTES;
/** Bytes of spare buffers kept at most (the rest are left to the GC). */
const SPARES_BUDGET = 12 * SPARE_BYTES;

/**
 * Chunk encoding and decoding for a RemoteChunkStore on worker threads (the
 * local store's workers do the same in chunk-worker.ts): compressing new
 * chunks and decompressing and re-hashing chunks read back keep the event
 * loop free for hashing, chunking and I/O. workers = 0: inline.
 */
export class CodecPool {
  private readonly codec: ChunkCodec;
  private readonly pool: WorkerPool<CodecTask, CodecResult> | null;
  /** Buffers that go to a worker and come back (inputs at once, decoded batches through release()), by size. */
  private readonly spares = new SpareBuffers(SPARE_BYTES, SPARES_BUDGET);
  /** Digester streams opened (each keeps its hash state on one worker), and their reused 1 MiB buffers. */
  private streams = 0;
  private readonly hashBuffers: Buffer[] = [];
  /** encodeFileRecords' open files: inline, and whether any worker has some. */
  private files: FileRangeReader | null = null;
  private readonly fileScratch = { buf: Buffer.alloc(0) };
  private filesOpen = false;

  /** readCheck: how chunks read back are checked (chunk-codec.ts); `full` decodes always re-hash. */
  constructor(level: number, workers: number, readCheck: ReadCheck = 'digest') {
    this.codec = new ChunkCodec(level, readCheck);
    this.pool = workers > 0 ? new WorkerPool(new URL(`./codec-worker.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url), workers, { level, readCheck }, reviveChunkError) : null;
  }

  /** A buffer for `total` bytes: a spare one of the smallest size that holds it, when there is such a size. */
  private take(total: number): Uint8Array<ArrayBuffer> {
    const ab = this.spares.take(total);
    return ab ? new Uint8Array(ab, 0, total) : new Uint8Array(total);
  }

  /** A spare buffer's memory for `bytes` bytes (null above the spare size), handed back through release(). */
  scratch(bytes: number): Buffer | null {
    const ab = this.spares.take(bytes);
    return ab ? Buffer.from(ab, 0, bytes) : null;
  }

  /** Takes back a buffer of a spare size (a decoded batch the caller is done with, a task's input). */
  release(buf: Uint8Array): void {
    this.spares.give(buf.buffer);
  }

  /** Parts laid end to end in a buffer of their own (transferable to a worker). */
  private gather(parts: Uint8Array[], total: number): Uint8Array<ArrayBuffer> {
    const buf = this.take(total);
    let at = 0;
    for (const p of parts) {
      buf.set(p, at);
      at += p.byteLength;
    }
    return buf;
  }

  /** Runs a task whose input buffer (and output, for a decode) may be spares; the input comes back to the spares. */
  private async runTask(task: BufferTask): Promise<CodecResult> {
    const transfer: ArrayBuffer[] = [task.buf.buffer as ArrayBuffer];
    if (task.op === 'decode' && task.into) transfer.push(task.into.buffer as ArrayBuffer);
    const r = await this.pool!.run(task, transfer);
    if (r.input) this.release(r.input);
    return r;
  }

  /** A digester that hashes on the workers (one stream stays on one worker); null without workers. */
  digester(): StreamDigester | null {
    return this.pool ? workerDigester(this.pool, ++this.streams, this.hashBuffers) : null;
  }

  /** An MD5 digester on the workers (digest() answers `md5:<hex>`); null without workers. */
  md5Digester(): StreamDigester | null {
    return this.pool ? workerDigester(this.pool, ++this.streams, this.hashBuffers, 'md5') : null;
  }

  /** Chunks encoded into records, end to end; `verify`: each hashed against its digest first (CHUNK_CORRUPT). */
  async encodeRecords(chunks: Array<{ digest: Digest; raw: Buffer }>, verify = false): Promise<Records> {
    let total = 0;
    for (const c of chunks) total += c.raw.byteLength;
    if (!this.pool || total < INLINE_BYTES) {
      if (verify) checkNames(chunks);
      return encodeRecords(this.codec, chunks);
    }
    const buf = this.gather(chunks.map((c) => c.raw), total);
    const r = (await this.runTask({ op: 'encode', buf, lengths: chunks.map((c) => c.raw.byteLength), digests: chunks.map((c) => c.digest), verify })) as { buf: Uint8Array; lengths: number[] };
    return { buf: Buffer.from(r.buf.buffer, r.buf.byteOffset, r.buf.byteLength), lengths: r.lengths };
  }

  /**
   * Chunks of a local file, read and encoded into records on a worker (the
   * event loop never holds their raw bytes), not hashed again (whoever
   * stores them does). closeFiles() closes the files after.
   */
  async encodeFileRecords(chunks: FileChunks): Promise<Records> {
    if (!this.pool) return encodeFileChunks(this.codec, (this.files ??= new FileRangeReader()), chunks, this.fileScratch);
    this.filesOpen = true;
    const r = (await this.pool.run({ op: 'encodeFile', ...chunks })) as { buf: Uint8Array; lengths: number[] };
    return { buf: Buffer.from(r.buf.buffer, r.buf.byteOffset, r.buf.byteLength), lengths: r.lengths };
  }

  /** Closes the files encodeFileRecords opened (on every worker). */
  async closeFiles(): Promise<void> {
    this.files?.close();
    this.fileScratch.buf = Buffer.alloc(0);
    if (this.pool && this.filesOpen) await this.pool.broadcast({ op: 'closeFiles' });
    this.filesOpen = false;
  }

  /**
   * Stored forms read back from the store, decoded and checked against their
   * digests (as ChunkCodec.decodeRead does; `full`: re-hashed, as `verify`
   * needs) and lengths, end to end in one buffer.
   */
  async decodeConcat(stored: Buffer[], digests: Digest[], rawLengths: number[], full = false): Promise<Buffer> {
    const r = await this.onDecoded(full ? 'verify' : 'decode', stored, digests, rawLengths, 0, (raw) => raw);
    return r as Buffer;
  }

  /** Resemblance sketches (encoded) of stored forms, decoded and verified first. */
  async sketches(stored: Buffer[], digests: Digest[], rawLengths: number[]): Promise<Buffer[]> {
    return (await this.onDecoded('sketch', stored, digests, rawLengths, 0, (raw) => {
      let at = 0;
      return rawLengths.map((len) => encodeSketch(sketch(raw.subarray(at, (at += len)))));
    })) as Buffer[];
  }

  /** The first chunk zstd-compressed with the others as its dictionary (dict-codec.ts), all decoded and verified first. */
  async dictCompress(stored: Buffer[], digests: Digest[], rawLengths: number[], level: number): Promise<Buffer> {
    return (await this.onDecoded('dictCompress', stored, digests, rawLengths, level, (raw) =>
      compressWithDict(raw.subarray(0, rawLengths[0]!), raw.subarray(rawLengths[0]!), level),
    )) as Buffer;
  }

  /** Decodes and verifies stored forms, then `inline` (or the worker's op of the same meaning) on the raw bytes end to end. */
  private async onDecoded(
    op: 'decode' | 'verify' | 'sketch' | 'dictCompress',
    stored: Buffer[],
    digests: Digest[],
    rawLengths: number[],
    level: number,
    inline: (raw: Buffer) => Buffer | Buffer[],
  ): Promise<Buffer | Buffer[]> {
    let total = 0;
    for (const s of stored) total += s.byteLength;
    const lengths = stored.map((s) => s.byteLength);
    const read = op !== 'verify';
    if (!this.pool || ((op === 'decode' || op === 'verify') && total < INLINE_BYTES)) return inline(decodeConcat(this.codec, Buffer.concat(stored, total), lengths, digests, rawLengths, undefined, read));
    const buf = this.gather(stored, total);
    let rawTotal = 0;
    for (const l of rawLengths) rawTotal += l;
    const task: BufferTask =
      op === 'decode' || op === 'verify'
        ? { op: 'decode', buf, lengths, digests, rawLengths, read, ...(rawTotal <= SPARE_BYTES ? { into: this.take(rawTotal) } : {}) }
        : { op, buf, lengths, digests, rawLengths, level };
    const r = await this.runTask(task);
    if ('sketches' in r) return r.sketches.map((u) => Buffer.from(u.buffer, u.byteOffset, u.byteLength));
    const out = (r as { buf: Uint8Array }).buf;
    return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  }

  /** One chunk, inline. */
  decode(stored: Buffer, digest: Digest): Buffer {
    return this.codec.decode(stored, digest);
  }

  encode(raw: Uint8Array): Buffer {
    return this.codec.encode(raw);
  }

  async close(): Promise<void> {
    await this.closeFiles().catch(() => {}); // a failed worker's files: the pool's end is what matters
    await this.pool?.close();
  }
}

import { SnapyardError } from '../errors.js';
import { digestFromRaw, rawOf, type Digest } from '../digest.js';
import type { FastCDCParams } from './fastcdc.js';

/**
 * Chunk index: how a blob is made of chunks. Binary, versioned, and itself
 * content-addressed (stored in the chunk store under the sha256 of these bytes).
 *
 *   offset size  field (little-endian)
 *   0      4     magic "SYIX"
 *   4      2     format version (1)
 *   6      2     kind: 0 = byte chunks (FastCDC over the blob's bytes)
 *   8      4     chunker: 1 = FastCDC v2020, normalization level 1
 *   12     4     min size
 *   16     4     avg size
 *   20     4     max size
 *   24     8     blob size in bytes (u64)
 *   32     32    blob digest (raw sha256)
 *   64     4     entry count
 *   68     4     reserved (0)
 *   72     36*n  entries: raw sha256 of the chunk (32), chunk length (u32)
 *
 * Chunk offsets are the running sum of lengths; they must add up to the blob size.
 */
export const INDEX_MAGIC = 0x58495953; // "SYIX"
export const INDEX_VERSION = 1;
export const INDEX_HEADER_SIZE = 72;
export const INDEX_ENTRY_SIZE = 36;
export const KIND_BYTES = 0;
export const CHUNKER_FASTCDC_V2020 = 1;

export interface IndexEntry {
  digest: Digest;
  offset: number;
  length: number;
}

/** A run of chunks: digests and lengths, with running offsets (the bytes they make, in order). */
export class ChunkList {
  /** Cumulative start offset of every chunk (plus the total size at the end). */
  readonly starts: Float64Array;

  constructor(
    /** 32 raw bytes per entry. */
    readonly digests: Buffer,
    readonly lengths: Uint32Array,
  ) {
    const n = lengths.length;
    if (digests.byteLength !== n * 32) throw new SnapyardError('INDEX_INVALID', 'digest table size mismatch');
    this.starts = new Float64Array(n + 1);
    let off = 0;
    for (let i = 0; i < n; i++) {
      this.starts[i] = off;
      off += lengths[i]!;
    }
    this.starts[n] = off;
  }

  get count(): number {
    return this.lengths.length;
  }

  /** Total bytes. */
  get total(): number {
    return this.starts[this.lengths.length]!;
  }

  digestAt(i: number): Digest {
    return digestFromRaw(this.digests.subarray(i * 32, i * 32 + 32));
  }

  /** The raw sha256 of chunk i (a view). */
  rawDigestAt(i: number): Buffer {
    return this.digests.subarray(i * 32, i * 32 + 32);
  }

  entry(i: number): IndexEntry {
    return { digest: this.digestAt(i), offset: this.starts[i]!, length: this.lengths[i]! };
  }

  *entries(): Generator<IndexEntry> {
    for (let i = 0; i < this.count; i++) yield this.entry(i);
  }

  /** Index of the chunk containing byte `offset` (0 <= offset < total). */
  chunkAt(offset: number): number {
    let lo = 0;
    let hi = this.count - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Pieces covering bytes [start, end) of the run, in order. */
  *pieces(start: number, end: number): Generator<Piece> {
    if (start >= end) return;
    const last = this.chunkAt(end - 1);
    for (let i = this.chunkAt(start); i <= last; i++) {
      const s = this.starts[i]!;
      yield { list: this, i, from: Math.max(0, start - s), to: Math.min(this.lengths[i]!, end - s) };
    }
  }

  /**
   * Writes the entries (digest, u32 length) at `at`; returns the offset after
   * them. `width` < 32 writes digest prefixes (the compact form a client sends
   * when the server can resolve prefixes against what it stores).
   */
  writeEntries(out: Buffer, at: number, width = 32): number {
    for (let i = 0; i < this.count; i++, at += width + 4) {
      this.digests.copy(out, at, i * 32, i * 32 + width);
      out.writeUInt32LE(this.lengths[i]!, at + width);
    }
    return at;
  }

  /** Reads n entries at `at` (bounds checked by the caller); prefixes (width < 32) go through `resolve`. */
  static readEntries(buf: Buffer, at: number, n: number, width = 32, resolve?: PrefixResolver): ChunkList {
    const digests = Buffer.allocUnsafe(n * 32);
    const lengths = new Uint32Array(n);
    for (let i = 0; i < n; i++, at += width + 4) {
      if (width === 32) buf.copy(digests, i * 32, at, at + 32);
      else {
        if (!resolve) throw indexInvalid('digest prefixes without a resolver');
        resolve(buf.subarray(at, at + width), i).copy(digests, i * 32);
      }
      lengths[i] = buf.readUInt32LE(at + width);
    }
    return new ChunkList(digests, lengths);
  }
}

/** Turns a digest prefix into the full raw digest (or throws). */
export type PrefixResolver = (prefix: Buffer, entry: number) => Buffer;

/** Bytes [from, to) of chunk i of a list: what readers fetch and cut. */
export interface Piece {
  list: ChunkList;
  i: number;
  from: number;
  to: number;
}

/** Byte-chunk index (kind 0): the blob is its chunks, in order. */
export class ChunkIndex extends ChunkList {
  readonly kind = KIND_BYTES;

  constructor(
    readonly blobDigest: Digest,
    readonly size: number,
    readonly params: FastCDCParams,
    digests: Buffer,
    lengths: Uint32Array,
  ) {
    super(digests, lengths);
    if (this.total !== size) throw new SnapyardError('INDEX_INVALID', `chunk lengths add up to ${this.total}, blob size is ${size}`);
  }

  /** The chunk lists this index references (for dedup, GC, deltas). */
  lists(): ChunkList[] {
    return [this];
  }

  /** Pieces of the blob's bytes [start, end). */
  blobPieces(start: number, end: number): Generator<Piece> {
    return this.pieces(start, end);
  }

  /** The stored form; `width` < 32 gives the compact wire form (digest prefixes). */
  encode(width = 32): Buffer {
    const out = Buffer.alloc(INDEX_HEADER_SIZE + this.count * (width + 4));
    writeIndexHeader(out, { kind: KIND_BYTES, params: this.params, size: this.size, blobDigest: this.blobDigest, count: this.count });
    this.writeEntries(out, INDEX_HEADER_SIZE, width);
    return out;
  }

  static decode(buf: Buffer, width = 32, resolve?: PrefixResolver): ChunkIndex {
    const h = readIndexHeader(buf);
    if (h.kind !== KIND_BYTES) throw indexInvalid(`unsupported kind ${h.kind}`);
    if (buf.byteLength !== INDEX_HEADER_SIZE + h.count * (width + 4)) throw indexInvalid('length does not match entry count');
    const list = ChunkList.readEntries(buf, INDEX_HEADER_SIZE, h.count, width, resolve);
    return new ChunkIndex(h.blobDigest, h.size, h.params, list.digests, list.lengths);
  }
}

export interface IndexHeader {
  kind: number;
  params: FastCDCParams;
  size: number;
  blobDigest: Digest;
  /** Entries that follow the header (kind 0: all; kind 1: the guest data chunks). */
  count: number;
}

export function indexInvalid(why: string): SnapyardError {
  return new SnapyardError('INDEX_INVALID', `chunk index: ${why}`);
}

/** The 72-byte header shared by every kind. */
export function writeIndexHeader(out: Buffer, h: IndexHeader): void {
  out.writeUInt32LE(INDEX_MAGIC, 0);
  out.writeUInt16LE(INDEX_VERSION, 4);
  out.writeUInt16LE(h.kind, 6);
  out.writeUInt32LE(CHUNKER_FASTCDC_V2020, 8);
  out.writeUInt32LE(h.params.minSize, 12);
  out.writeUInt32LE(h.params.avgSize, 16);
  out.writeUInt32LE(h.params.maxSize, 20);
  out.writeBigUInt64LE(BigInt(h.size), 24);
  rawOf(h.blobDigest).copy(out, 32);
  out.writeUInt32LE(h.count, 64);
  out.writeUInt32LE(0, 68);
}

export function readIndexHeader(buf: Buffer): IndexHeader {
  if (buf.byteLength < INDEX_HEADER_SIZE || buf.readUInt32LE(0) !== INDEX_MAGIC) throw indexInvalid('bad magic');
  const version = buf.readUInt16LE(4);
  if (version !== INDEX_VERSION) throw indexInvalid(`unsupported version ${version}`);
  if (buf.readUInt32LE(8) !== CHUNKER_FASTCDC_V2020) throw indexInvalid('unknown chunker');
  const params = { minSize: buf.readUInt32LE(12), avgSize: buf.readUInt32LE(16), maxSize: buf.readUInt32LE(20) };
  const size = Number(buf.readBigUInt64LE(24));
  if (!Number.isSafeInteger(size)) throw indexInvalid('blob size out of range');
  return { kind: buf.readUInt16LE(6), params, size, blobDigest: digestFromRaw(buf.subarray(32, 64)), count: buf.readUInt32LE(64) };
}

/** Accumulates entries while a blob is being chunked. */
export class ChunkIndexBuilder {
  private digests: Buffer = Buffer.allocUnsafe(32 * 1024);
  private lengths: Uint32Array = new Uint32Array(1024);
  private n = 0;

  constructor(private readonly params: FastCDCParams = { minSize: 0, avgSize: 0, maxSize: 0 }) {}

  push(digest: Digest, length: number): void {
    if (this.n === this.lengths.length) {
      const d = Buffer.allocUnsafe(this.digests.byteLength * 2);
      this.digests.copy(d);
      this.digests = d;
      const l = new Uint32Array(this.lengths.length * 2);
      l.set(this.lengths);
      this.lengths = l;
    }
    this.digests.write(digest.slice(7), this.n * 32, 'hex');
    this.lengths[this.n++] = length;
    this.total += length;
  }

  /** Bytes pushed so far. */
  total = 0;

  build(blobDigest: Digest, size: number): ChunkIndex {
    return new ChunkIndex(blobDigest, size, this.params, Buffer.from(this.digests.subarray(0, this.n * 32)), this.lengths.slice(0, this.n));
  }

  buildList(): ChunkList {
    return new ChunkList(Buffer.from(this.digests.subarray(0, this.n * 32)), this.lengths.slice(0, this.n));
  }
}

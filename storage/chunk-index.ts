import { SnapyardError } from './errors.js';
import { digestFromRaw, rawOf, type Digest } from './digest.js';
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

export class ChunkIndex {
  /** Cumulative start offset of every chunk (plus the blob size at the end). */
  private readonly starts: Float64Array;

  constructor(
    readonly blobDigest: Digest,
    readonly size: number,
    readonly params: FastCDCParams,
    /** 32 bytes per entry. */
    private readonly digests: Buffer,
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
    if (off !== size) throw new SnapyardError('INDEX_INVALID', `chunk lengths add up to ${off}, blob size is ${size}`);
  }

  get count(): number {
    return this.lengths.length;
  }

  digestAt(i: number): Digest {
    return digestFromRaw(this.digests.subarray(i * 32, i * 32 + 32));
  }

  entry(i: number): IndexEntry {
    return { digest: this.digestAt(i), offset: this.starts[i]!, length: this.lengths[i]! };
  }

  *entries(): Generator<IndexEntry> {
    for (let i = 0; i < this.count; i++) yield this.entry(i);
  }

  /** Index of the chunk containing byte `offset` (0 <= offset < size). */
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

  encode(): Buffer {
    const n = this.count;
    const out = Buffer.alloc(INDEX_HEADER_SIZE + n * INDEX_ENTRY_SIZE);
    out.writeUInt32LE(INDEX_MAGIC, 0);
    out.writeUInt16LE(INDEX_VERSION, 4);
    out.writeUInt16LE(KIND_BYTES, 6);
    out.writeUInt32LE(CHUNKER_FASTCDC_V2020, 8);
    out.writeUInt32LE(this.params.minSize, 12);
    out.writeUInt32LE(this.params.avgSize, 16);
    out.writeUInt32LE(this.params.maxSize, 20);
    out.writeBigUInt64LE(BigInt(this.size), 24);
    rawOf(this.blobDigest).copy(out, 32);
    out.writeUInt32LE(n, 64);
    for (let i = 0; i < n; i++) {
      const at = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
      this.digests.copy(out, at, i * 32, i * 32 + 32);
      out.writeUInt32LE(this.lengths[i]!, at + 32);
    }
    return out;
  }

  static decode(buf: Buffer): ChunkIndex {
    const bad = (why: string) => new SnapyardError('INDEX_INVALID', `chunk index: ${why}`);
    if (buf.byteLength < INDEX_HEADER_SIZE || buf.readUInt32LE(0) !== INDEX_MAGIC) throw bad('bad magic');
    const version = buf.readUInt16LE(4);
    if (version !== INDEX_VERSION) throw bad(`unsupported version ${version}`);
    if (buf.readUInt16LE(6) !== KIND_BYTES) throw bad(`unsupported kind ${buf.readUInt16LE(6)}`);
    if (buf.readUInt32LE(8) !== CHUNKER_FASTCDC_V2020) throw bad('unknown chunker');
    const params = { minSize: buf.readUInt32LE(12), avgSize: buf.readUInt32LE(16), maxSize: buf.readUInt32LE(20) };
    const size = Number(buf.readBigUInt64LE(24));
    if (!Number.isSafeInteger(size)) throw bad('blob size out of range');
    const blobDigest = digestFromRaw(buf.subarray(32, 64));
    const n = buf.readUInt32LE(64);
    if (buf.byteLength !== INDEX_HEADER_SIZE + n * INDEX_ENTRY_SIZE) throw bad('length does not match entry count');
    const digests = Buffer.allocUnsafe(n * 32);
    const lengths = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      const at = INDEX_HEADER_SIZE + i * INDEX_ENTRY_SIZE;
      buf.copy(digests, i * 32, at, at + 32);
      lengths[i] = buf.readUInt32LE(at + 32);
    }
    return new ChunkIndex(blobDigest, size, params, digests, lengths);
  }
}

/** Accumulates entries while a blob is being chunked. */
export class ChunkIndexBuilder {
  private digests: Buffer = Buffer.allocUnsafe(32 * 1024);
  private lengths: Uint32Array = new Uint32Array(1024);
  private n = 0;

  constructor(private readonly params: FastCDCParams) {}

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
  }

  build(blobDigest: Digest, size: number): ChunkIndex {
    return new ChunkIndex(blobDigest, size, this.params, Buffer.from(this.digests.subarray(0, this.n * 32)), this.lengths.slice(0, this.n));
  }
}

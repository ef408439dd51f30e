import { ChunkList, indexInvalid, INDEX_HEADER_SIZE, readIndexHeader, writeIndexHeader, type Piece, type PrefixResolver } from './chunk-index.js';
import type { Digest } from '../digest.js';
import type { FastCDCParams } from './fastcdc.js';

/**
 * qcow2 chunk index (kind 1): a qcow2 file described by its guest view plus a
 * host recipe, so that the same guest data dedups whatever host layout qemu
 * gave it, and the exact file can still be rebuilt.
 *
 * - The **data stream** is the guest bytes of the allocated extents (data and
 *   compressed clusters, decompressed) in guest order, concatenated; FastCDC
 *   cuts it into the data chunks. The **extents** say where each piece of the
 *   stream sits in the guest disk, and which guest ranges are zero clusters;
 *   what no extent covers is unallocated (backing file, or zeros).
 * - The **recipe** lists the host file in order as ops: "len bytes of the data
 *   stream from offset s" (a run of data clusters) or "the next len bytes of
 *   the residue stream". The residue stream is every host byte the guest view
 *   does not explain (header, tables, refcounts, compressed clusters as
 *   stored, snapshot-only clusters), cut by FastCDC into residue chunks.
 *
 * Layout after the common 72-byte header (chunk-index.ts; kind 1, entry
 * count n = data chunks, blob size = file size), little-endian:
 *   72  8     guest virtual size
 *   80  4     cluster size of the image
 *   84  4     flags: bit 0 = the image names a backing file
 *   88  4     extent count e
 *   92  4     residue chunk count r
 *   96  4     op count k
 *   100 4     reserved (0)
 *   104       n x 36  data chunks: sha256 (32), length (u32)
 *             e x 20  extents: guest offset (u64), length (u64), kind (u32: 0 data, 1 zero)
 *             r x 36  residue chunks
 *             k x 20  ops: kind (u32: 0 data stream, 1 residue), length (u64), data-stream offset (u64; 0 for residue)
 * Extents are in guest order and do not overlap; data extent lengths add up to
 * the data stream's size, op lengths to the file size, residue op lengths to
 * the residue stream's size. Anything else is INDEX_INVALID.
 */
export const KIND_QCOW2 = 1;
export const EXTENT_DATA = 0;
export const EXTENT_ZERO = 1;
export const OP_DATA = 0;
export const OP_RESIDUE = 1;
const SECTION = 32;
const EXTENT_SIZE = 20;
const OP_SIZE = 20;
/** Hard caps so a hostile index cannot make us allocate without bound. */
const MAX_ENTRIES = 1 << 26;

export interface Qcow2Layout {
  virtualSize: number;
  clusterSize: number;
  hasBacking: boolean;
  /** Extents in guest order: offsets, lengths, kinds (EXTENT_DATA | EXTENT_ZERO). */
  extentOffsets: Float64Array;
  extentLengths: Float64Array;
  extentKinds: Uint8Array;
  opKinds: Uint8Array;
  opLengths: Float64Array;
  opSources: Float64Array;
}

export class Qcow2Index {
  readonly kind = KIND_QCOW2;
  /** Host offset where each op starts (plus the file size at the end). */
  private readonly opStarts: Float64Array;
  /** Residue-stream offset of each op (meaningful for residue ops). */
  private readonly opResidue: Float64Array;
  /** Data-stream offset of each extent (meaningful for data extents). */
  readonly extentStream: Float64Array;
  /** Indexes of the data extents, in order (for data stream -> guest lookups). */
  private readonly dataExtents: Uint32Array;
  private residueSearch: Float64Array | undefined;

  constructor(
    readonly blobDigest: Digest,
    readonly size: number,
    readonly params: FastCDCParams,
    readonly layout: Qcow2Layout,
    readonly data: ChunkList,
    readonly residue: ChunkList,
  ) {
    const L = layout;
    const e = L.extentKinds.length;
    this.extentStream = new Float64Array(e);
    let prevEnd = 0;
    let stream = 0;
    const dataIdx: number[] = [];
    for (let i = 0; i < e; i++) {
      const off = L.extentOffsets[i]!;
      const len = L.extentLengths[i]!;
      if (!(len > 0) || off < prevEnd || off + len > L.virtualSize || !Number.isSafeInteger(off + len)) throw indexInvalid(`extent ${i} is out of order or outside the disk`);
      prevEnd = off + len;
      if (L.extentKinds[i] === EXTENT_DATA) {
        this.extentStream[i] = stream;
        stream += len;
        dataIdx.push(i);
      } else if (L.extentKinds[i] !== EXTENT_ZERO) throw indexInvalid(`extent ${i} has unknown kind ${L.extentKinds[i]}`);
    }
    if (stream !== data.total) throw indexInvalid(`data extents hold ${stream} bytes, data chunks ${data.total}`);
    this.dataExtents = Uint32Array.from(dataIdx);
    const k = L.opKinds.length;
    this.opStarts = new Float64Array(k + 1);
    this.opResidue = new Float64Array(k);
    let host = 0;
    let res = 0;
    for (let i = 0; i < k; i++) {
      const len = L.opLengths[i]!;
      if (!(len > 0) || !Number.isSafeInteger(len)) throw indexInvalid(`op ${i} has length ${len}`);
      this.opStarts[i] = host;
      this.opResidue[i] = res;
      if (L.opKinds[i] === OP_RESIDUE) res += len;
      else if (L.opKinds[i] === OP_DATA) {
        if (L.opSources[i]! + len > data.total) throw indexInvalid(`op ${i} reads past the data stream`);
      } else throw indexInvalid(`op ${i} has unknown kind ${L.opKinds[i]}`);
      host += len;
    }
    this.opStarts[k] = host;
    if (host !== size) throw indexInvalid(`ops add up to ${host} bytes, blob size is ${size}`);
    if (res !== residue.total) throw indexInvalid(`residue ops take ${res} bytes, residue chunks hold ${residue.total}`);
  }

  get count(): number {
    return this.data.count + this.residue.count;
  }

  lists(): ChunkList[] {
    return [this.data, this.residue];
  }

  /** Pieces of the file's bytes [start, end), in host order. */
  *blobPieces(start: number, end: number): Generator<Piece> {
    if (start >= end) return;
    const L = this.layout;
    let i = findStart(this.opStarts, start);
    for (; i < L.opKinds.length && this.opStarts[i]! < end; i++) {
      const a = Math.max(start, this.opStarts[i]!) - this.opStarts[i]!;
      const b = Math.min(end, this.opStarts[i + 1]!) - this.opStarts[i]!;
      if (L.opKinds[i] === OP_DATA) yield* this.data.pieces(L.opSources[i]! + a, L.opSources[i]! + b);
      else yield* this.residue.pieces(this.opResidue[i]! + a, this.opResidue[i]! + b);
    }
  }

  /** Guest ranges holding data-stream bytes [start, start + length). */
  *guestRanges(start: number, length: number): Generator<{ guestOffset: number; length: number }> {
    const end = start + length;
    const ext = this.dataExtents;
    let lo = 0;
    let hi = ext.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.extentStream[ext[mid]!]! <= start) lo = mid;
      else hi = mid - 1;
    }
    for (let j = lo; j < ext.length && start < end; j++) {
      const x = ext[j]!;
      const s = this.extentStream[x]!;
      const len = this.layout.extentLengths[x]!;
      if (s + len <= start) continue;
      const a = start - s;
      const n = Math.min(len - a, end - start);
      yield { guestOffset: this.layout.extentOffsets[x]! + a, length: n };
      start += n;
    }
  }

  /**
   * The guest range [start, start + length) in pieces: data (with its
   * data-stream offset), zero (zero clusters) or unallocated (stream -1 and
   * zero false: the backing file's bytes, or zeros without one).
   */
  *guestPieces(start: number, length: number): Generator<{ guestOffset: number; length: number; stream: number; zero: boolean }> {
    const L = this.layout;
    const end = start + length;
    const offs = L.extentOffsets;
    let lo = 0;
    let hi = offs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (offs[mid]! <= start) lo = mid;
      else hi = mid - 1;
    }
    let at = start;
    for (let x = lo; x < offs.length && at < end; x++) {
      const eo = offs[x]!;
      const el = L.extentLengths[x]!;
      if (eo + el <= at) continue;
      if (eo >= end) break;
      if (eo > at) {
        yield { guestOffset: at, length: eo - at, stream: -1, zero: false };
        at = eo;
      }
      const n = Math.min(eo + el, end) - at;
      const isData = L.extentKinds[x] === EXTENT_DATA;
      yield { guestOffset: at, length: n, stream: isData ? this.extentStream[x]! + (at - eo) : -1, zero: !isData };
      at += n;
    }
    if (at < end) yield { guestOffset: at, length: end - at, stream: -1, zero: false };
  }

  /** Host ranges holding residue-stream bytes [start, start + length). */
  *residueHostRanges(start: number, length: number): Generator<{ hostOffset: number; length: number }> {
    const L = this.layout;
    const end = start + length;
    if (L.opKinds.length === 0) return;
    this.residueSearch ??= Float64Array.from([...this.opResidue, Infinity]);
    let i = findStart(this.residueSearch, start);
    // Ops sharing a residue offset (data ops in between): start from the first of them.
    while (i > 0 && this.opResidue[i - 1] === this.opResidue[i]) i--;
    for (; i < L.opKinds.length && start < end; i++) {
      if (L.opKinds[i] !== OP_RESIDUE) continue;
      const r = this.opResidue[i]!;
      const len = L.opLengths[i]!;
      if (r + len <= start) continue;
      const a = start - r;
      const n = Math.min(len - a, end - start);
      yield { hostOffset: this.opStarts[i]! + a, length: n };
      start += n;
    }
  }

  /** The stored form; `width` < 32 gives the compact wire form (digest prefixes). */
  encode(width = 32): Buffer {
    const L = this.layout;
    const e = L.extentKinds.length;
    const k = L.opKinds.length;
    const out = Buffer.alloc(INDEX_HEADER_SIZE + SECTION + this.data.count * (width + 4) + e * EXTENT_SIZE + this.residue.count * (width + 4) + k * OP_SIZE);
    writeIndexHeader(out, { kind: KIND_QCOW2, params: this.params, size: this.size, blobDigest: this.blobDigest, count: this.data.count });
    let at = INDEX_HEADER_SIZE;
    out.writeBigUInt64LE(BigInt(L.virtualSize), at);
    out.writeUInt32LE(L.clusterSize, at + 8);
    out.writeUInt32LE(L.hasBacking ? 1 : 0, at + 12);
    out.writeUInt32LE(e, at + 16);
    out.writeUInt32LE(this.residue.count, at + 20);
    out.writeUInt32LE(k, at + 24);
    at = this.data.writeEntries(out, at + SECTION, width);
    for (let i = 0; i < e; i++, at += EXTENT_SIZE) {
      out.writeBigUInt64LE(BigInt(L.extentOffsets[i]!), at);
      out.writeBigUInt64LE(BigInt(L.extentLengths[i]!), at + 8);
      out.writeUInt32LE(L.extentKinds[i]!, at + 16);
    }
    at = this.residue.writeEntries(out, at, width);
    for (let i = 0; i < k; i++, at += OP_SIZE) {
      out.writeUInt32LE(L.opKinds[i]!, at);
      out.writeBigUInt64LE(BigInt(L.opLengths[i]!), at + 4);
      out.writeBigUInt64LE(BigInt(L.opSources[i]!), at + 12);
    }
    return out;
  }

  static decode(buf: Buffer, width = 32, resolve?: PrefixResolver): Qcow2Index {
    const entry = width + 4;
    const h = readIndexHeader(buf);
    if (h.kind !== KIND_QCOW2) throw indexInvalid(`kind ${h.kind} is not a qcow2 index`);
    if (buf.byteLength < INDEX_HEADER_SIZE + SECTION) throw indexInvalid('truncated qcow2 section');
    let at = INDEX_HEADER_SIZE;
    const virtualSize = Number(buf.readBigUInt64LE(at));
    const clusterSize = buf.readUInt32LE(at + 8);
    const flags = buf.readUInt32LE(at + 12);
    const e = buf.readUInt32LE(at + 16);
    const r = buf.readUInt32LE(at + 20);
    const k = buf.readUInt32LE(at + 24);
    const n = h.count;
    if (!Number.isSafeInteger(virtualSize) || n > MAX_ENTRIES || e > MAX_ENTRIES || r > MAX_ENTRIES || k > MAX_ENTRIES) throw indexInvalid('counts out of range');
    const expect = INDEX_HEADER_SIZE + SECTION + n * entry + e * EXTENT_SIZE + r * entry + k * OP_SIZE;
    if (buf.byteLength !== expect) throw indexInvalid('length does not match its counts');
    at += SECTION;
    const data = ChunkList.readEntries(buf, at, n, width, resolve);
    at += n * entry;
    const extentOffsets = new Float64Array(e);
    const extentLengths = new Float64Array(e);
    const extentKinds = new Uint8Array(e);
    for (let i = 0; i < e; i++, at += EXTENT_SIZE) {
      extentOffsets[i] = Number(buf.readBigUInt64LE(at));
      extentLengths[i] = Number(buf.readBigUInt64LE(at + 8));
      const kind = buf.readUInt32LE(at + 16);
      extentKinds[i] = kind > 255 ? 255 : kind;
    }
    const residue = ChunkList.readEntries(buf, at, r, width, resolve && ((p, i) => resolve(p, n + i)));
    at += r * entry;
    const opKinds = new Uint8Array(k);
    const opLengths = new Float64Array(k);
    const opSources = new Float64Array(k);
    for (let i = 0; i < k; i++, at += OP_SIZE) {
      const kind = buf.readUInt32LE(at);
      opKinds[i] = kind > 255 ? 255 : kind;
      opLengths[i] = Number(buf.readBigUInt64LE(at + 4));
      opSources[i] = Number(buf.readBigUInt64LE(at + 12));
    }
    const layout = { virtualSize, clusterSize, hasBacking: (flags & 1) !== 0, extentOffsets, extentLengths, extentKinds, opKinds, opLengths, opSources };
    return new Qcow2Index(h.blobDigest, h.size, h.params, layout, data, residue);
  }
}

/** Largest i with starts[i] <= x. */
function findStart(starts: Float64Array, x: number): number {
  let lo = 0;
  let hi = starts.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (starts[mid]! <= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

import binding from 'zstd-napi/binding.js';
import { ChunkCorruptError } from '../errors.js';
import { sha256, type Digest } from '../digest.js';

/**
 * The stored form of a chunk (on disk, and on the wire when chunks are served
 * "as stored"):
 *
 *   offset size  field
 *   0      4     magic "SYC1"
 *   4      1     encoding: 0 = raw, 1 = zstd frame
 *   5      3     reserved, zero
 *   8      4     uncompressed length, u32 little-endian
 *   12     ...   payload (raw bytes, or one zstd frame)
 *
 * The zstd frame carries zstd's content checksum (XXH64 of the uncompressed
 * bytes, checked by the decompressor itself); an incompressible chunk is
 * still a frame (of raw blocks, ~15 bytes more) so that it carries one too.
 * A chunk is stored raw only when the frame would be more than FRAME_SLACK
 * bytes larger; frames written before the checksum have none (the flag in
 * the frame header says which). The name of a chunk is the sha256 of its
 * uncompressed bytes: decode() verifies it. decodeRead() (a chunk read back
 * from this store, whose name was verified when it was written) checks the
 * frame's checksum instead when the codec's ReadCheck is 'checksum' and the
 * frame has one (about 3x cheaper than sha256), else the digest too.
 */
export const CHUNK_MAGIC = 0x31435953; // "SYC1" little-endian
export const CHUNK_HEADER_SIZE = 12;
export const ENCODING_RAW = 0;
export const ENCODING_ZSTD = 1;
/** A frame up to this many bytes larger than the raw chunk is kept (for its checksum) instead of raw. */
const FRAME_SLACK = 64;
/** zstd's frame magic, and the content-checksum bit of its frame header descriptor. */
const ZSTD_MAGIC = 0xfd2fb528;
const CHECKSUM_FLAG = 0x04;

/**
 * How a chunk read back from a store is checked: 'digest' re-hashes it
 * (sha256), 'checksum' lets zstd check the frame's content checksum where the
 * frame has one (sha256 otherwise). Bytes from the network, and `verify`, always use the digest.
 */
export type ReadCheck = 'digest' | 'checksum';
export const READ_CHECKS: readonly ReadCheck[] = ['digest', 'checksum'];

/** Whether a zstd payload is one frame that carries a content checksum. */
export function checksummedFrame(payload: Uint8Array): boolean {
  if (payload.byteLength < 9) return false;
  const b = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (b.readUInt32LE(0) !== ZSTD_MAGIC || (b[4]! & CHECKSUM_FLAG) === 0) return false;
  try {
    return binding.findFrameCompressedSize(payload) === payload.byteLength;
  } catch {
    return false;
  }
}

/** Largest chunk the codec accepts (FastCDC's max is 16 MiB; the index itself may be larger). */
export const MAX_CHUNK_RAW = 256 * 1024 * 1024;

export class ChunkCodec {
  private readonly cctx = new binding.CCtx();
  private readonly dctx = new binding.DCtx();
  private scratch = Buffer.allocUnsafe(0);

  constructor(
    readonly level = 3,
    readonly readCheck: ReadCheck = 'digest',
  ) {
    this.cctx.setParameter(binding.CParameter.compressionLevel, level);
    this.cctx.setParameter(binding.CParameter.checksumFlag, 1);
  }

  encode(raw: Uint8Array): Buffer {
    const bound = binding.compressBound(raw.byteLength);
    if (this.scratch.byteLength < bound) this.scratch = Buffer.allocUnsafe(bound);
    let encoding = ENCODING_RAW;
    let payloadLen = raw.byteLength;
    if (raw.byteLength > 0) {
      const n = this.cctx.compress2(this.scratch, raw);
      if (n <= raw.byteLength + FRAME_SLACK) {
        encoding = ENCODING_ZSTD;
        payloadLen = n;
      }
    }
    const out = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + payloadLen);
    out.writeUInt32LE(CHUNK_MAGIC, 0);
    out.writeUInt32LE(encoding, 4);
    out.writeUInt32LE(raw.byteLength, 8);
    if (encoding === ENCODING_ZSTD) this.scratch.copy(out, CHUNK_HEADER_SIZE, 0, payloadLen);
    else out.set(raw, CHUNK_HEADER_SIZE);
    return out;
  }

  /** Room `encodeInto` may need for `rawLength` bytes. */
  static bound(rawLength: number): number {
    return CHUNK_HEADER_SIZE + Math.max(binding.compressBound(rawLength) + FRAME_SLACK, rawLength);
  }

  /** Encodes `raw` into out[at, ...) (which has ChunkCodec.bound(raw.length) bytes of room); returns the stored length. */
  encodeInto(raw: Uint8Array, out: Buffer, at: number): number {
    let encoding = ENCODING_RAW;
    let payloadLen = raw.byteLength;
    if (raw.byteLength > 0) {
      const n = this.cctx.compress2(out.subarray(at + CHUNK_HEADER_SIZE), raw);
      if (n <= raw.byteLength + FRAME_SLACK) {
        encoding = ENCODING_ZSTD;
        payloadLen = n;
      }
    }
    out.writeUInt32LE(CHUNK_MAGIC, at);
    out.writeUInt32LE(encoding, at + 4);
    out.writeUInt32LE(raw.byteLength, at + 8);
    if (encoding === ENCODING_RAW) out.set(raw, at + CHUNK_HEADER_SIZE);
    return CHUNK_HEADER_SIZE + payloadLen;
  }

  /**
   * Decodes a stored chunk and checks it hashes to `digest`. With `target`,
   * the bytes are decoded into target[at, at + length) (no extra copy for zstd).
   */
  decode(stored: Uint8Array, digest: Digest, target?: Buffer, at = 0): Buffer {
    const raw = this.decodeUnverified(stored, digest, target, at);
    const actual = sha256(raw);
    if (actual !== digest) throw new ChunkCorruptError(digest, `content hashes to ${actual}`);
    return raw;
  }

  /**
   * A chunk read back from this store (its name was verified when it was
   * written, its record header names it): with ReadCheck 'checksum' and a
   * checksummed frame, zstd's check of the content is the verification;
   * otherwise as decode().
   */
  decodeRead(stored: Uint8Array, digest: Digest, target?: Buffer, at = 0): Buffer {
    if (this.readCheck === 'checksum' && stored.byteLength > CHUNK_HEADER_SIZE && stored[4] === ENCODING_ZSTD && checksummedFrame(stored.subarray(CHUNK_HEADER_SIZE))) {
      return this.decodeUnverified(stored, digest, target, at);
    }
    return this.decode(stored, digest, target, at);
  }

  decodeUnverified(stored: Uint8Array, digest: Digest, target?: Buffer, at = 0): Buffer {
    const buf = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
    if (buf.byteLength < CHUNK_HEADER_SIZE || buf.readUInt32LE(0) !== CHUNK_MAGIC) {
      throw new ChunkCorruptError(digest, 'bad header');
    }
    const encoding = buf.readUInt32LE(4);
    const rawLen = buf.readUInt32LE(8);
    if (rawLen > MAX_CHUNK_RAW) throw new ChunkCorruptError(digest, `length ${rawLen} out of range`);
    if (target && at + rawLen > target.byteLength) throw new ChunkCorruptError(digest, `length ${rawLen} does not fit the index`);
    const payload = buf.subarray(CHUNK_HEADER_SIZE);
    if (encoding === ENCODING_RAW) {
      if (payload.byteLength !== rawLen) throw new ChunkCorruptError(digest, 'raw length mismatch');
      if (!target) return payload;
      payload.copy(target, at);
      return target.subarray(at, at + rawLen);
    }
    if (encoding !== ENCODING_ZSTD) throw new ChunkCorruptError(digest, `unknown encoding ${encoding}`);
    const out = target ? target.subarray(at, at + rawLen) : Buffer.allocUnsafe(rawLen);
    let n: number;
    try {
      n = this.dctx.decompress(out, payload);
    } catch (e) {
      throw new ChunkCorruptError(digest, `zstd: ${(e as Error).message}`);
    }
    if (n !== rawLen) throw new ChunkCorruptError(digest, 'decompressed length mismatch');
    return out;
  }
}

/**
 * Stored forms laid end to end in `buf` (`lengths` bytes each), decoded into
 * one buffer, each checked against its digest (`read`: as decodeRead() checks
 * a chunk read back from the store) and its expected raw length.
 */
export function decodeConcat(c: ChunkCodec, buf: Uint8Array, lengths: number[], digests: Digest[], rawLengths: number[], into?: Uint8Array, read = false): Buffer {
  let total = 0;
  for (const l of rawLengths) total += l;
  // Into the caller's buffer when it is large enough (a reused one: no allocation per batch).
  const out = into && into.byteLength >= total ? Buffer.from(into.buffer, into.byteOffset, total) : Buffer.allocUnsafeSlow(total);
  let src = 0;
  let at = 0;
  digests.forEach((d, i) => {
    const stored = buf.subarray(src, src + lengths[i]!);
    const raw = read ? c.decodeRead(stored, d, out, at) : c.decode(stored, d, out, at);
    if (raw.byteLength !== rawLengths[i]) throw new ChunkCorruptError(d, `has ${raw.byteLength} bytes, the index says ${rawLengths[i]}`);
    src += lengths[i]!;
    at += raw.byteLength;
  });
  return out;
}

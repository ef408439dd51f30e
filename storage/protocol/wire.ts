/**
 * Wire formats of the delta protocol (docs/delta-protocol.md), shared by the
 * server and the client.
 *
 * Chunk frames (`application/vnd.snapyard.chunks.v1`, server -> client), one
 * per chunk, little-endian:
 *   0   32  raw sha256 of the chunk's uncompressed bytes
 *   32  1   encoding: 0 = stored form (chunk-codec.ts: SYC1 header + payload),
 *                     1 = one zstd frame compressed with a dictionary: the raw
 *                         bytes of the listed chunks, concatenated
 *   33  1   dictionary chunk count d
 *   34  2   reserved (0)
 *   36  4   payload length p
 *   40  32d dictionary chunk digests (raw), in order
 *   ..  p   payload
 *
 * Upload frames (`application/vnd.snapyard.chunk-upload.v1+zstd`, client ->
 * server): one zstd stream whose content is, per chunk, the raw sha256 (32),
 * the length (u32) and the raw bytes. One stream lets zstd find what new
 * chunks share with each other.
 */
import { Compressor } from 'zstd-napi';
import { unzstdBuffer } from '../zstd-stream.js';
import { dictBytes } from '../delta/dict-codec.js';
import { SnapyardError } from '../errors.js';

/** A push's upload as chunk frames (docs/delta-protocol.md, "Pushing a new version"), and its name in _missing's uploadForms. */
export const FRAMES_UPLOAD_TYPE = 'application/vnd.snapyard.chunks.v1';
export const FRAMES_UPLOAD_FORM = 'frames';

export const FRAME_HEADER = 40;
export const ENC_STORED = 0;
export const ENC_DICT = 1;
/** Largest chunk or payload a frame may carry (FastCDC's max is 256 KiB by default). */
export const MAX_FRAME_PAYLOAD = 16 * 1024 * 1024;

export interface ChunkFrame {
  digest: Buffer;
  encoding: number;
  dict: Buffer[];
  payload: Buffer;
}

export function frameHeader(digest: Uint8Array, encoding: number, dict: Uint8Array[], payloadLength: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER + dict.length * 32);
  h.set(digest, 0);
  h[32] = encoding;
  h[33] = dict.length;
  h.writeUInt32LE(payloadLength, 36);
  dict.forEach((d, i) => h.set(d, FRAME_HEADER + i * 32));
  return h;
}

/** Reads exact byte counts from a stream of pieces. */
export class ExactReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** n bytes, or null at a clean end of stream before the first of them; short data throws. */
  async read(n: number): Promise<Buffer | null> {
    if (this.buf.byteLength < n && !this.ended) {
      // Pieces are gathered and joined once (joining on every piece is quadratic in a frame's size).
      const parts: Buffer[] = this.buf.byteLength > 0 ? [this.buf] : [];
      let have = this.buf.byteLength;
      while (have < n) {
        const r = await this.it.next();
        if (r.done) {
          this.ended = true;
          break;
        }
        parts.push(Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength));
        have += r.value.byteLength;
      }
      this.buf = parts.length === 1 ? parts[0]! : Buffer.concat(parts, have);
    }
    if (this.buf.byteLength === 0 && this.ended) return null;
    if (this.buf.byteLength < n) throw new SnapyardError('SIZE_INVALID', `stream ends inside a frame (${this.buf.byteLength} of ${n} bytes)`);
    const out = Buffer.from(this.buf.subarray(0, n));
    this.buf = this.buf.subarray(n);
    return out;
  }
}

export async function* readChunkFrames(source: AsyncIterable<Uint8Array>): AsyncGenerator<ChunkFrame> {
  const r = new ExactReader(source);
  for (;;) {
    const h = await r.read(FRAME_HEADER);
    if (!h) return;
    const d = h[33]!;
    const len = h.readUInt32LE(36);
    if (len > MAX_FRAME_PAYLOAD || h[32]! > ENC_DICT) throw new SnapyardError('SIZE_INVALID', `bad chunk frame (encoding ${h[32]}, ${len} bytes)`);
    const dictBytes = d > 0 ? (await r.read(d * 32))! : Buffer.alloc(0);
    const dict: Buffer[] = [];
    for (let i = 0; i < d; i++) dict.push(dictBytes.subarray(i * 32, i * 32 + 32));
    const payload = len > 0 ? (await r.read(len))! : Buffer.alloc(0);
    yield { digest: h.subarray(0, 32), encoding: h[32]!, dict, payload };
  }
}

export async function* readUploadFrames(source: AsyncIterable<Uint8Array>): AsyncGenerator<{ digest: Buffer; raw: Buffer }> {
  const r = new ExactReader(source);
  for (;;) {
    const h = await r.read(36);
    if (!h) return;
    const len = h.readUInt32LE(32);
    if (len > MAX_FRAME_PAYLOAD) throw new SnapyardError('SIZE_INVALID', `uploaded chunk of ${len} bytes is larger than ${MAX_FRAME_PAYLOAD}`);
    yield { digest: h.subarray(0, 32), raw: len > 0 ? (await r.read(len))! : Buffer.alloc(0) };
  }
}

export function uploadFrameHeader(digest: Uint8Array, length: number): Buffer {
  const h = Buffer.alloc(36);
  h.set(digest, 0);
  h.writeUInt32LE(length, 32);
  return h;
}

function windowLogFor(bytes: number): number {
  return Math.min(30, Math.max(20, Math.ceil(Math.log2(bytes + 1))));
}

/**
 * zstd with an optional raw-content dictionary (the way `--patch-from` works):
 * used for chunk indexes sent as a difference from an index the client holds.
 * The window covers dictionary + data. A prefix starting with zstd's dictionary
 * magic is used as raw content the way dict-codec.ts does it (dictBytes).
 */
export function compressWithPrefix(data: Uint8Array, prefix: Uint8Array | null, level: number): Buffer {
  const c = new Compressor();
  c.setParameters({ compressionLevel: level, windowLog: windowLogFor(data.byteLength + (prefix?.byteLength ?? 0)), contentSizeFlag: true });
  if (prefix && prefix.byteLength > 0) c.loadDictionary(dictBytes(prefix));
  return c.compress(data);
}

/**
 * Inverse of compressWithPrefix, for untrusted input: at most `maxBytes` come
 * out (counted as they are produced, whatever the frame header claims) and
 * the window is capped at 128 MiB (an index and its prefix, 64 MiB each).
 */
export function decompressWithPrefix(payload: Uint8Array, prefix: Uint8Array | null, maxBytes: number): Buffer {
  try {
    return unzstdBuffer(payload, maxBytes, 'index difference', prefix && prefix.byteLength > 0 ? dictBytes(prefix) : undefined, 27);
  } catch (e) {
    if (e instanceof SnapyardError && e.code === 'LIMIT_EXCEEDED') throw new SnapyardError('SIZE_INVALID', `decompressed data is larger than ${maxBytes} bytes`);
    throw e;
  }
}

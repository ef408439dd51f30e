import { closeSync, openSync, writeSync } from 'node:fs';
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { createHash, type Hash } from 'node:crypto';
import { ChunkCodec, type ReadCheck } from './chunk-codec.js';
import { PackReader, PackWriter, readConcat, RECORD_HEADER_SIZE, writeRecordHeader, type RecordLocation } from './pack-files.js';
import type { Digest } from '../digest.js';
import { encodeSketch, sketch } from '../delta/resemblance.js';
import { compressWithDict } from '../delta/dict-codec.js';
import { hashStep, type HashResult, type HashTask } from './hash-task.js';
import { ChunkCorruptError } from '../errors.js';

/**
 * Worker thread of a LocalChunkStore: compresses and appends chunks to its own
 * pack; reads, decompresses and verifies chunks. zstd-napi is synchronous, so
 * this keeps the event loop free and uses every core.
 */
export type ChunkTask =
  | { op: 'append'; digest: Digest; raw: Uint8Array }
  /** Chunks laid end to end in `buf`; `buf` comes back with the result, for reuse. */
  | { op: 'appendBatch'; buf: Uint8Array; lengths: number[]; digests: Digest[] }
  /**
   * Stored forms laid end to end in `buf`, each decoded and hashed against its digest and raw length, then appended as they are; `buf` comes back.
   * With `place`, each chunk's verified bytes are also written into the file at `path` (opened, not created):
   * spans[i] holds the chunk's [from, to, fileOffset] triples (a pull writing its image as chunks arrive).
   */
  | { op: 'appendStoredBatch'; buf: Uint8Array; lengths: number[]; rawLengths: number[]; digests: Digest[]; place?: { path: string; spans: number[][] } }
  | { op: 'read'; digest: Digest; loc: RecordLocation }
  | { op: 'readMany'; digests: Digest[]; locs: RecordLocation[]; lengths: number[]; into?: Uint8Array }
  | { op: 'sync' }
  /** Closes this worker's current pack (gc: packs that existed before are never appended to again). */
  | { op: 'seal' }
  /** Closes a cached fd of a pack that compaction removed. */
  | { op: 'drop'; pack: string }
  /** Copies records (header checked) into this worker's pack, fsync'ed: compaction. */
  | { op: 'copyRecords'; digests: Digest[]; locs: RecordLocation[] }
  /** Reads, decompresses and re-hashes chunks; answers the ones that fail (verify). */
  | { op: 'verifyMany'; digests: Digest[]; locs: RecordLocation[] }
  /** Resemblance sketches (encoded, resemblance.ts) of stored chunks, read and verified here. */
  | { op: 'sketchMany'; digests: Digest[]; locs: RecordLocation[]; lengths: number[] }
  /** The first chunk zstd-compressed with the others (end to end) as its dictionary (delta encoding, dict-codec.ts). */
  | { op: 'dictCompress'; digests: Digest[]; locs: RecordLocation[]; lengths: number[]; level: number }
  /** Stream hashing (hash-task.ts). */
  | HashTask;
export type ChunkTaskResult = { bad: Array<{ i: number; message: string }> } | { sketches: Uint8Array[] } | HashResult | { loc: RecordLocation } | { locs: RecordLocation[]; buf: Uint8Array } | { data: Uint8Array } | null;

const { root, level, readCheck } = workerData as { root: string; level: number; readCheck: ReadCheck };
const codec = new ChunkCodec(level, readCheck);
const writer = new PackWriter(root, `p${process.pid}-${threadId}`);
const reader = new PackReader(root);
let out = Buffer.allocUnsafeSlow(0);
/** Reused by sketchMany (its bytes never leave this thread). */
let sketchBuf = Buffer.allocUnsafeSlow(0);
/** Reused by verifyMany. */
let verifyBuf = Buffer.allocUnsafeSlow(0);
const hashes = new Map<number, Hash>();

/**
 * A view that owns its whole ArrayBuffer, so it can be transferred: small
 * Buffers are slices of Node's shared pool, which must not be moved (Node 22
 * refuses with "Cannot transfer object of unsupported type"; Node 20 detached
 * the pool from under every other Buffer in it).
 */
function ownBuffer(b: Uint8Array): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? new Uint8Array(b.buffer, 0, b.byteLength) : new Uint8Array(b);
}

function handle(req: ChunkTask): { result: ChunkTaskResult; transfer: ArrayBuffer[] } | Promise<{ result: ChunkTaskResult; transfer: ArrayBuffer[] }> {
  switch (req.op) {
    case 'append':
      return { result: { loc: writer.append(req.digest, codec.encode(req.raw)) }, transfer: [] };
    case 'appendBatch': {
      // Compress straight into the records buffer: one write, no intermediate copies.
      const buf = Buffer.from(req.buf.buffer, req.buf.byteOffset, req.buf.byteLength);
      let room = 0;
      for (const len of req.lengths) room += RECORD_HEADER_SIZE + ChunkCodec.bound(len);
      if (out.byteLength < room) out = Buffer.allocUnsafeSlow(room);
      const stored: number[] = [];
      let from = 0;
      let at = 0;
      for (let i = 0; i < req.lengths.length; i++) {
        const len = req.lengths[i]!;
        const n = codec.encodeInto(buf.subarray(from, from + len), out, at + RECORD_HEADER_SIZE);
        writeRecordHeader(out, at, req.digests[i]!, n);
        stored.push(n);
        from += len;
        at += RECORD_HEADER_SIZE + n;
      }
      const locs = writer.appendRecords(out.subarray(0, at), stored);
      return { result: { locs, buf: req.buf }, transfer: [req.buf.buffer as ArrayBuffer] };
    }
    case 'appendStoredBatch': {
      // Every record is checked before any is written: a batch with a bad chunk leaves nothing behind.
      const buf = Buffer.from(req.buf.buffer, req.buf.byteOffset, req.buf.byteLength);
      let room = 0;
      for (const len of req.lengths) room += RECORD_HEADER_SIZE + len;
      if (out.byteLength < room) out = Buffer.allocUnsafeSlow(room);
      let from = 0;
      let at = 0;
      const fd = req.place ? openSync(req.place.path, 'r+') : -1;
      try {
        for (let i = 0; i < req.lengths.length; i++) {
          const len = req.lengths[i]!;
          const digest = req.digests[i]!;
          const stored = buf.subarray(from, from + len);
          const rawLen = req.rawLengths[i]!;
          if (stored.byteLength < 12 || stored.readUInt32LE(8) !== rawLen) throw new ChunkCorruptError(digest, `stored form does not name its ${rawLen} bytes`);
          if (verifyBuf.byteLength < rawLen) verifyBuf = Buffer.allocUnsafeSlow(Math.max(rawLen, 1024 * 1024));
          codec.decode(stored, digest, verifyBuf, 0);
          // Verified: now it may go to its places in the file.
          const spans = req.place?.spans[i];
          if (spans) for (let k = 0; k + 2 < spans.length; k += 3) writeAt(fd, verifyBuf, spans[k]!, spans[k + 1]!, spans[k + 2]!);
          writeRecordHeader(out, at, digest, len);
          stored.copy(out, at + RECORD_HEADER_SIZE);
          from += len;
          at += RECORD_HEADER_SIZE + len;
        }
      } finally {
        if (fd >= 0) closeSync(fd);
      }
      const locs = writer.appendRecords(out.subarray(0, at), req.lengths);
      return { result: { locs, buf: req.buf }, transfer: [req.buf.buffer as ArrayBuffer] };
    }
    case 'read': {
      const data = ownBuffer(reader.readRaw(codec, req.digest, req.loc));
      return { result: { data }, transfer: [data.buffer as ArrayBuffer] };
    }
    case 'readMany': {
      const into = req.into ? Buffer.from(req.into.buffer, req.into.byteOffset, req.into.byteLength) : undefined;
      const out = readConcat(reader, codec, req.digests, req.locs, req.lengths, into);
      const data = into ? new Uint8Array(out.buffer, out.byteOffset, out.byteLength) : ownBuffer(out);
      return { result: { data }, transfer: [data.buffer as ArrayBuffer] };
    }
    case 'sketchMany': {
      let total = 0;
      for (const len of req.lengths) total += len;
      if (sketchBuf.byteLength < total) sketchBuf = Buffer.allocUnsafeSlow(total);
      const data = readConcat(reader, codec, req.digests, req.locs, req.lengths, sketchBuf.subarray(0, total));
      const sketches: Uint8Array[] = [];
      let at = 0;
      for (const len of req.lengths) {
        const e = encodeSketch(sketch(data.subarray(at, at + len)));
        sketches.push(new Uint8Array(e.buffer, e.byteOffset, e.byteLength));
        at += len;
      }
      return { result: { sketches }, transfer: [] };
    }
    case 'dictCompress': {
      let total = 0;
      for (const len of req.lengths) total += len;
      if (sketchBuf.byteLength < total) sketchBuf = Buffer.allocUnsafeSlow(total);
      const data = readConcat(reader, codec, req.digests, req.locs, req.lengths, sketchBuf.subarray(0, total));
      const first = req.lengths[0]!;
      const payload = ownBuffer(compressWithDict(data.subarray(0, first), data.subarray(first), req.level));
      return { result: { data: payload }, transfer: [payload.buffer as ArrayBuffer] };
    }
    case 'sync':
      return writer.sync().then(() => ({ result: null, transfer: [] }));
    case 'seal':
      return writer.seal().then(() => ({ result: null, transfer: [] }));
    case 'drop':
      reader.drop(req.pack);
      return { result: null, transfer: [] };
    case 'copyRecords': {
      let total = 0;
      for (const l of req.locs) total += RECORD_HEADER_SIZE + l.length;
      const buf = Buffer.allocUnsafe(total);
      let at = 0;
      for (let i = 0; i < req.digests.length; i++) {
        const stored = reader.readStored(req.digests[i]!, req.locs[i]!, true);
        writeRecordHeader(buf, at, req.digests[i]!, stored.byteLength);
        stored.copy(buf, at + RECORD_HEADER_SIZE);
        at += RECORD_HEADER_SIZE + stored.byteLength;
      }
      const locs = writer.appendRecords(buf, req.locs.map((l) => l.length));
      return writer.sync().then(() => ({ result: { locs, buf: new Uint8Array(0) }, transfer: [] }));
    }
    case 'verifyMany': {
      const bad: Array<{ i: number; message: string }> = [];
      for (let i = 0; i < req.digests.length; i++) {
        const d = req.digests[i]!;
        try {
          const stored = reader.readStored(d, req.locs[i]!, true);
          const rawLen = stored.byteLength >= 12 ? stored.readUInt32LE(8) : 0;
          if (rawLen > 64 * 1024 * 1024) throw new Error(`chunk ${d} is corrupt: implausible length ${rawLen}`);
          if (verifyBuf.byteLength < rawLen) verifyBuf = Buffer.allocUnsafeSlow(Math.max(rawLen, 1024 * 1024));
          codec.decode(stored, d, verifyBuf, 0);
        } catch (e) {
          bad.push({ i, message: (e as Error).message });
        }
      }
      return { result: { bad }, transfer: [] };
    }
    case 'hash':
      return hashStep(hashes, req);
  }
}

/** Writes buf[from, to) at `position` of fd, all of it. */
function writeAt(fd: number, buf: Buffer, from: number, to: number, position: number): void {
  while (from < to) {
    const n = writeSync(fd, buf, from, to - from, position);
    from += n;
    position += n;
  }
}

parentPort!.on('message', (msg: { id: number; req: ChunkTask }) => {
  const fail = (e: unknown) => {
    const err = e as Error & { code?: string; digest?: string };
    parentPort!.postMessage({ id: msg.id, error: { name: err.name, message: err.message, code: err.code, digest: err.digest } });
  };
  try {
    const r = handle(msg.req);
    if (r instanceof Promise) r.then((v) => parentPort!.postMessage({ id: msg.id, result: v.result }, v.transfer), fail);
    else parentPort!.postMessage({ id: msg.id, result: r.result }, r.transfer);
  } catch (e) {
    fail(e);
  }
});

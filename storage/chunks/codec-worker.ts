import { parentPort, workerData } from 'node:worker_threads';
import { ChunkCodec, decodeConcat, type ReadCheck } from './chunk-codec.js';
import type { Digest } from '../digest.js';
import { checkNames, encodeRecords } from './remote-chunk-spool.js';
import { encodeSketch, sketch } from '../delta/resemblance.js';
import { compressWithDict } from '../delta/dict-codec.js';
import { hashStep, type HashResult, type HashTask } from './hash-task.js';
import type { Hash } from 'node:crypto';
import { encodeFileChunks, FileRangeReader, type FileChunks } from './file-ranges.js';

/**
 * Worker thread of a CodecPool (codec-pool.ts): encodes chunks into records
 * and decodes (and verifies) stored forms, off the event loop (zstd-napi and
 * sha256 are synchronous).
 */
export type CodecTask =
  /** Raw chunks laid end to end: their records (headers written), end to end; `verify`: each hashed first (CHUNK_CORRUPT when it is not its digest). */
  | { op: 'encode'; buf: Uint8Array; lengths: number[]; digests: Digest[]; verify?: boolean }
  /** Chunks read here from a local file (file-ranges.ts), then as 'encode'. */
  | ({ op: 'encodeFile' } & FileChunks)
  /** Closes the files encodeFile opened. */
  | { op: 'closeFiles' }
  /** Stored forms laid end to end: the raw bytes, end to end, each checked against its digest (`read`: as ChunkCodec.decodeRead checks) and length. */
  | { op: 'decode'; buf: Uint8Array; lengths: number[]; digests: Digest[]; rawLengths: number[]; read: boolean; into?: Uint8Array }
  /** Stored forms decoded and verified, then each one's resemblance sketch (encoded, resemblance.ts). */
  | { op: 'sketch'; buf: Uint8Array; lengths: number[]; digests: Digest[]; rawLengths: number[] }
  /** Stored forms decoded and verified, then the first zstd-compressed with the others as its dictionary (dict-codec.ts). */
  | { op: 'dictCompress'; buf: Uint8Array; lengths: number[]; digests: Digest[]; rawLengths: number[]; level: number }
  /** Stream hashing (hash-task.ts): a push's commit hashes the rebuilt blob here, off the event loop. */
  | HashTask;
/** `input`: the task's buffer, handed back for reuse. */
export type CodecResult = ({ buf: Uint8Array; lengths: number[] } | { buf: Uint8Array } | { sketches: Uint8Array[] } | HashResult | { closed: true }) & { input?: Uint8Array };

const { level, readCheck } = workerData as { level: number; readCheck: ReadCheck };
const codec = new ChunkCodec(level, readCheck);

/** A view that owns its whole ArrayBuffer (transferable). */
function owned(b: Buffer): Uint8Array {
  return b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? new Uint8Array(b.buffer, 0, b.byteLength) : new Uint8Array(b);
}

const hashes = new Map<number, Hash>();
const files = new FileRangeReader();
const fileScratch = { buf: Buffer.allocUnsafeSlow(0) };

function handle(t: CodecTask): { result: CodecResult; transfer: ArrayBuffer[] } {
  if (t.op === 'hash') return hashStep(hashes, t);
  if (t.op === 'closeFiles') {
    files.close();
    fileScratch.buf = Buffer.allocUnsafeSlow(0);
    return { result: { closed: true }, transfer: [] };
  }
  if (t.op === 'encodeFile') {
    // The records' buffer is its own (allocUnsafeSlow): it goes whole, as a view, with no copy.
    const recs = encodeFileChunks(codec, files, t, fileScratch);
    const buf = new Uint8Array(recs.buf.buffer, recs.buf.byteOffset, recs.buf.byteLength);
    return { result: { buf, lengths: recs.lengths }, transfer: [buf.buffer as ArrayBuffer] };
  }
  if (t.op === 'encode') {
    const raws: Array<{ digest: Digest; raw: Buffer }> = [];
    let at = 0;
    t.digests.forEach((digest, i) => {
      raws.push({ digest, raw: Buffer.from(t.buf.buffer, t.buf.byteOffset + at, t.lengths[i]!) });
      at += t.lengths[i]!;
    });
    if (t.verify) checkNames(raws);
    const recs = encodeRecords(codec, raws);
    const buf = owned(recs.buf);
    return { result: { buf, lengths: recs.lengths, input: t.buf }, transfer: [buf.buffer as ArrayBuffer, t.buf.buffer as ArrayBuffer] };
  }
  // The input goes back with the answer (the pool reuses it); a buffer kept here would live until this isolate's next GC.
  // Sketches and dictionary compression read chunks back from the store too.
  const raw = decodeConcat(codec, t.buf, t.lengths, t.digests, t.rawLengths, t.op === 'decode' ? t.into : undefined, t.op === 'decode' ? t.read : true);
  if (t.op === 'sketch') {
    let at = 0;
    const sketches = t.rawLengths.map((len) => new Uint8Array(encodeSketch(sketch(raw.subarray(at, (at += len))))));
    return { result: { sketches, input: t.buf }, transfer: [...sketches.map((x) => x.buffer as ArrayBuffer), t.buf.buffer as ArrayBuffer] };
  }
  if (t.op === 'dictCompress') {
    const buf = owned(compressWithDict(raw.subarray(0, t.rawLengths[0]!), raw.subarray(t.rawLengths[0]!), t.level));
    return { result: { buf, input: t.buf }, transfer: [buf.buffer as ArrayBuffer, t.buf.buffer as ArrayBuffer] };
  }
  // Decoded into the pool's buffer when it sent one (a view of it), else into one of our own.
  const buf = raw.buffer === t.into?.buffer ? new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength) : owned(raw);
  return { result: { buf, input: t.buf }, transfer: [buf.buffer as ArrayBuffer, t.buf.buffer as ArrayBuffer] };
}

parentPort!.on('message', ({ id, req }: { id: number; req: CodecTask }) => {
  try {
    const { result, transfer } = handle(req);
    parentPort!.postMessage({ id, result }, transfer);
  } catch (e) {
    const err = e as Error & { code?: string; digest?: string };
    parentPort!.postMessage({ id, error: { name: err.name, message: err.message, code: err.code, digest: err.digest } });
  }
});

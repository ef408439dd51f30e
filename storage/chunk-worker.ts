import { parentPort, threadId, workerData } from 'node:worker_threads';
import { ChunkCodec } from './chunk-codec.js';
import { PackReader, PackWriter, readConcat, type RecordLocation } from './pack-files.js';
import type { Digest } from './digest.js';

/**
 * Worker thread of a LocalChunkStore: compresses and appends chunks to its own
 * pack; reads, decompresses and verifies chunks. zstd-napi is synchronous, so
 * this keeps the event loop free and uses every core.
 */
export type ChunkTask =
  | { op: 'append'; digest: Digest; raw: Uint8Array }
  | { op: 'read'; digest: Digest; loc: RecordLocation }
  | { op: 'readMany'; digests: Digest[]; locs: RecordLocation[]; lengths: number[] }
  | { op: 'sync' };
export type ChunkTaskResult = { loc: RecordLocation } | { data: Uint8Array } | null;

const { root, level } = workerData as { root: string; level: number };
const codec = new ChunkCodec(level);
const writer = new PackWriter(root, `p${process.pid}-${threadId}`);
const reader = new PackReader(root);

parentPort!.on('message', (msg: { id: number; req: ChunkTask }) => {
  try {
    const req = msg.req;
    if (req.op === 'append') {
      const loc = writer.append(req.digest, codec.encode(req.raw));
      parentPort!.postMessage({ id: msg.id, result: { loc } });
    } else if (req.op === 'read') {
      const raw = reader.readRaw(codec, req.digest, req.loc);
      const data = new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
      parentPort!.postMessage({ id: msg.id, result: { data } }, [data.buffer as ArrayBuffer]);
    } else if (req.op === 'readMany') {
      const out = readConcat(reader, codec, req.digests, req.locs, req.lengths);
      const data = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      parentPort!.postMessage({ id: msg.id, result: { data } }, [data.buffer as ArrayBuffer]);
    } else {
      writer.sync();
      parentPort!.postMessage({ id: msg.id, result: null });
    }
  } catch (e) {
    const err = e as Error & { code?: string; digest?: string };
    parentPort!.postMessage({ id: msg.id, error: { name: err.name, message: err.message, code: err.code, digest: err.digest } });
  }
});

import { parentPort, workerData } from 'node:worker_threads';
import { ChunkCodec } from './chunk-codec.js';
import { addChunkSync } from './local-chunk-files.js';
import type { Digest } from './digest.js';

/** Worker thread of a LocalChunkStore: hash, dedup, compress and write chunks. */
export interface ChunkTask {
  raw: Uint8Array;
  expect?: Digest;
}

const { root, level } = workerData as { root: string; level: number };
const codec = new ChunkCodec(level);

parentPort!.on('message', (msg: { id: number; req: ChunkTask }) => {
  try {
    const result = addChunkSync(root, codec, msg.req.raw, msg.req.expect);
    parentPort!.postMessage({ id: msg.id, result });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    parentPort!.postMessage({ id: msg.id, error: { message: err.message, code: err.code } });
  }
});

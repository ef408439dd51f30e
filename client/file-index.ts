/**
 * The chunk index of a local file, computed exactly as the server would
 * (same builder, same parameters), so both sides name the same chunks: the
 * guest view plus host recipe for a qcow2 image the reader understands, byte
 * chunks otherwise. The file's sha256 is computed on a worker thread while
 * the main thread chunks. With a cache, a file that has not changed (same
 * device, inode, size and mtime) is not read again.
 */
import { createReadStream } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { ChunkIndex, ChunkIndexBuilder } from '../storage/blobs/chunk-index.js';
import { ChunkHasher } from './chunk-hasher.js';
import { decodeBlobIndex, type BlobIndex } from '../storage/blobs/blob-index.js';
import type { Digest } from '../storage/digest.js';
import { isSnapyardError } from '../storage/errors.js';
import { chunkStream, DEFAULT_FASTCDC, type FastCDCParams } from '../storage/blobs/fastcdc.js';
import { buildQcow2Index } from '../storage/qcow2/index-builder.js';
import { Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import type { ClientCache } from './cache.js';

export interface FileIndex {
  digest: Digest;
  index: BlobIndex;
  /** The index's stored form (what the server stores, byte for byte). */
  encoded: Buffer;
  /** True when it came from the cache without reading the file. */
  cached: boolean;
}

const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { createReadStream } = require('node:fs');
const h = createHash('sha256');
createReadStream(workerData, { highWaterMark: 4 << 20 })
  .on('data', (b) => h.update(b))
  .on('error', (e) => { throw e; })
  .on('end', () => parentPort.postMessage(h.digest('hex')));
`;

/** sha256 of a file, on a worker thread. */
export function hashFile(path: string): Promise<Digest> {
  return new Promise((resolve, reject) => {
    const w = new Worker(HASH_WORKER, { eval: true, workerData: path });
    w.once('message', (hex: string) => resolve(`sha256:${hex}`));
    w.once('error', reject);
    w.once('exit', (code) => code !== 0 && reject(new Error(`hash worker exited with ${code}`)));
  });
}

const PLACEHOLDER = `sha256:${'0'.repeat(64)}` as Digest;

export async function indexFile(path: string, cache: ClientCache | null, params: FastCDCParams = DEFAULT_FASTCDC): Promise<FileIndex> {
  const known = cache?.fileDigest(path) ?? null;
  if (known) {
    const bytes = cache!.readIndex(known);
    if (bytes) return { digest: known, index: decodeBlobIndex(bytes), encoded: bytes, cached: true };
  }
  const [digest, built] = await Promise.all([hashFile(path), buildIndex(path, params)]);
  const index = built instanceof Qcow2Index
    ? new Qcow2Index(digest, built.size, built.params, built.layout, built.data, built.residue)
    : new ChunkIndex(digest, built.size, built.params, built.digests, built.lengths);
  const encoded = index.encode();
  if (cache) {
    cache.writeIndex(digest, encoded);
    cache.rememberFile(path, digest);
  }
  return { digest, index, encoded, cached: false };
}

/** The index of the file's chunks (qcow2: guest view and host recipe), their sha256 computed on a worker (chunk-hasher.ts). */
async function buildIndex(path: string, params: FastCDCParams): Promise<Qcow2Index | ChunkIndex> {
  if (Qcow2Image.sniff(path)) {
    try {
      return await hashed((hasher) => buildQcow2Index(path, hasher, { blobDigest: PLACEHOLDER, params }));
    } catch (e) {
      if (!isSnapyardError(e, 'QCOW2_INVALID')) throw e;
    }
  }
  return hashed(async (hasher) => {
    const b = new ChunkIndexBuilder(params);
    for await (const c of chunkStream(createReadStream(path, { highWaterMark: 4 << 20 }), params, { copy: false })) {
      b.push((await hasher.add(c.data)).digest, c.length);
    }
    return b.build(PLACEHOLDER, b.total);
  });
}

/** An index built with a ChunkHasher as its sink, the real digests in place once it is done. */
async function hashed<T extends Qcow2Index | ChunkIndex>(build: (hasher: ChunkHasher) => Promise<T>): Promise<T> {
  const hasher = new ChunkHasher();
  try {
    const ix = await build(hasher);
    await hasher.resolve(ix.lists());
    return ix;
  } finally {
    await hasher.close();
  }
}

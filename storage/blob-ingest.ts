import { ChunkIndexBuilder, type ChunkIndex } from './chunk-index.js';
import type { AddResult, ChunkStore } from './chunk-store.js';
import { Digester, type Digest } from './digest.js';
import { SnapyardError } from './errors.js';
import { chunkStream, DEFAULT_FASTCDC, type FastCDCParams } from './fastcdc.js';

export interface IngestOptions {
  /** The digest the blob must have; DIGEST_INVALID (after the stream is read) otherwise. */
  expectDigest?: Digest;
  /** The size the blob must have; SIZE_INVALID otherwise. */
  expectSize?: number;
  params?: FastCDCParams;
  /** Chunks being hashed/compressed/written at once (bounds memory: ~ this x maxSize). */
  inFlight?: number;
}

export interface IngestResult {
  digest: Digest;
  size: number;
  index: ChunkIndex;
  indexDigest: Digest;
  chunks: number;
  /** Chunks (and their stored bytes) this ingest added to the store. */
  newChunks: number;
  newStoredBytes: number;
}

/**
 * Stream -> FastCDC chunks -> store only the missing ones -> chunk index.
 * Memory is bounded by `inFlight` chunks plus the index (36 bytes a chunk),
 * whatever the blob size. The blob digest is computed on the way; the index is
 * stored only when it matches `expectDigest`. Chunks already written for a blob
 * that then fails its digest check are unreferenced and left to GC.
 */
export async function ingestBlob(store: ChunkStore, source: AsyncIterable<Uint8Array>, opts: IngestOptions = {}): Promise<IngestResult> {
  const params = opts.params ?? DEFAULT_FASTCDC;
  const inFlight = opts.inFlight ?? 16;
  const digester = new Digester();
  const maxSize = opts.expectSize;
  async function* hashed(): AsyncGenerator<Uint8Array> {
    for await (const piece of source) {
      digester.update(piece);
      if (maxSize !== undefined && digester.size > maxSize) {
        throw new SnapyardError('SIZE_INVALID', `blob is larger than the declared ${maxSize} bytes`);
      }
      yield piece;
    }
  }
  const builder = new ChunkIndexBuilder(params);
  const queue: Promise<AddResult>[] = [];
  let newChunks = 0;
  let newStoredBytes = 0;
  let chunks = 0;
  const settle = async () => {
    const r = await queue.shift()!;
    builder.push(r.digest, r.size);
    chunks++;
    if (r.written) {
      newChunks++;
      newStoredBytes += r.storedSize;
    }
  };
  try {
    for await (const c of chunkStream(hashed(), params)) {
      queue.push(store.add(c.data, { donate: true }));
      if (queue.length >= inFlight) await settle();
    }
    while (queue.length > 0) await settle();
  } catch (e) {
    // Let in-flight writes finish before reporting, so nothing races the caller's clean-up.
    await Promise.allSettled(queue);
    throw e;
  }
  const size = digester.size;
  const digest = digester.digest();
  if (opts.expectDigest !== undefined && digest !== opts.expectDigest) {
    throw new SnapyardError('DIGEST_INVALID', `content hashes to ${digest}, not ${opts.expectDigest}`, {
      detail: { expected: opts.expectDigest, actual: digest },
    });
  }
  if (maxSize !== undefined && size !== maxSize) {
    throw new SnapyardError('SIZE_INVALID', `blob has ${size} bytes, ${maxSize} were declared`);
  }
  const index = builder.build(digest, size);
  const stored = await store.add(index.encode());
  if (stored.written) newStoredBytes += stored.storedSize;
  await store.flush();
  return { digest, size, index, indexDigest: stored.digest, chunks, newChunks, newStoredBytes };
}

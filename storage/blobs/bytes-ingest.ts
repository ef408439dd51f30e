/**
 * Byte ingest: a blob's bytes FastCDC-chunked as they come, the chunks the
 * store lacks written, the blob's chunk index stored. The options and result
 * every ingest shares (blob-ingest.ts picks the qcow2 path or this one).
 */
import { ChunkIndexBuilder } from './chunk-index.js';
import type { BlobIndex } from './blob-index.js';
import type { ChunkStore } from '../chunks/chunk-store.js';
import { localDigester, type Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';
import { chunkStream, DEFAULT_FASTCDC, type FastCDCParams } from './fastcdc.js';
import { pinningWriter, type PinLease } from '../coord/chunk-pins.js';

export interface IngestOptions {
  /** The digest the blob must have; DIGEST_INVALID (after the stream is read) otherwise. */
  expectDigest?: Digest;
  /** The size the blob must have; SIZE_INVALID otherwise. */
  expectSize?: number;
  params?: FastCDCParams;
  /**
   * Where a qcow2 blob is spooled so its guest view can be chunked (random
   * access); without it, qcow2 blobs are byte-chunked like anything else.
   */
  spoolDir?: string;
  /**
   * Pins every chunk the blob uses (written or found held) and its index, so
   * GC keeps them until the caller commits the blob and releases the lease.
   */
  lease?: PinLease;
}

export interface IngestResult {
  digest: Digest;
  size: number;
  index: BlobIndex;
  /** 'qcow2': guest view + host recipe; 'bytes': byte chunks (anything else, or a qcow2 image not understood). */
  layout: 'qcow2' | 'bytes';
  indexDigest: Digest;
  chunks: number;
  /** Chunks (and their stored bytes) this ingest added to the store. */
  newChunks: number;
  newStoredBytes: number;
}

/** FastCDC over the blob's bytes as they come. */
export async function ingestBytes(store: ChunkStore, source: AsyncIterable<Uint8Array>, opts: IngestOptions = {}): Promise<IngestResult> {
  const params = opts.params ?? DEFAULT_FASTCDC;
  const digester = store.digester?.() ?? localDigester();
  const maxSize = opts.expectSize;
  async function* hashed(): AsyncGenerator<Uint8Array> {
    for await (const piece of source) {
      const wait = digester.update(piece);
      if (wait) await wait;
      if (maxSize !== undefined && digester.size > maxSize) {
        throw new SnapyardError('SIZE_INVALID', `blob is larger than the declared ${maxSize} bytes`);
      }
      yield piece;
    }
  }
  const builder = new ChunkIndexBuilder(params);
  const writer = pinningWriter(store.writer(), opts.lease);
  let chunks = 0;
  try {
    // Chunks are views of the chunker's window: the writer copies what it keeps before we move on.
    for await (const c of chunkStream(hashed(), params, { copy: false })) {
      const r = await writer.add(c.data);
      builder.push(r.digest, c.length);
      chunks++;
    }
  } catch (e) {
    // Let in-flight writes finish before reporting, so nothing races the caller's clean-up.
    await writer.finish().catch(() => {});
    throw e;
  }
  let { newChunks, newStoredBytes } = await writer.finish();
  const size = digester.size;
  const digest = await digester.digest();
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
  opts.lease?.pin(stored.digest);
  if (stored.written) newStoredBytes += stored.storedSize;
  await store.flush();
  return { digest, size, index, indexDigest: stored.digest, chunks, newChunks, newStoredBytes, layout: 'bytes' };
}

/** The first `n` bytes of a stream (fewer if it is shorter), and the whole stream again. */
export async function peek(source: AsyncIterable<Uint8Array>, n: number): Promise<{ prefix: Buffer; rest: AsyncIterable<Uint8Array> }> {
  const it = source[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let have = 0;
  let done = false;
  while (have < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    head.push(r.value);
    have += r.value.byteLength;
  }
  const prefix = Buffer.concat(head.map((h) => Buffer.from(h.buffer, h.byteOffset, h.byteLength))).subarray(0, n);
  async function* rest(): AsyncGenerator<Uint8Array> {
    yield* head;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  return { prefix, rest: rest() };
}

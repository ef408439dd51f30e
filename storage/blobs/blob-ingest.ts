/**
 * Blob ingest: a qcow2 image (bare, or the member of a tar layer) is chunked
 * over its guest view (qcow2-ingest.ts); anything else byte by byte
 * (bytes-ingest.ts).
 */
import type { ChunkStore } from '../chunks/chunk-store.js';
import { hasQcow2Magic } from '../qcow2/format.js';
import { isTarWrappedQcow2, TAR_QCOW2_PEEK } from '../tar/tar-qcow2.js';
import { ingestBytes, peek, type IngestOptions, type IngestResult } from './bytes-ingest.js';
import { ingestQcow2 } from './qcow2-ingest.js';

export type { IngestOptions, IngestResult };
export { ingestBytes, peek };

/**
 * Stream -> FastCDC chunks -> store only the missing ones -> chunk index.
 * Memory is bounded by the writer's batches in flight plus the index (36 bytes a chunk),
 * whatever the blob size. The blob digest is computed on the way; the index is
 * stored only when it matches `expectDigest`. Chunks already written for a blob
 * that then fails its digest check are unreferenced and left to GC.
 */
export async function ingestBlob(store: ChunkStore, source: AsyncIterable<Uint8Array>, opts: IngestOptions = {}): Promise<IngestResult> {
  if (opts.spoolDir === undefined) return ingestBytes(store, source, opts);
  const { prefix, rest } = await peek(source, TAR_QCOW2_PEEK);
  if (!hasQcow2Magic(prefix) && !isTarWrappedQcow2(prefix)) return ingestBytes(store, rest, opts);
  return ingestQcow2(store, rest, { ...opts, spoolDir: opts.spoolDir });
}


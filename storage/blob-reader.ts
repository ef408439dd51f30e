import type { ChunkIndex } from './chunk-index.js';
import type { ChunkStore } from './chunk-store.js';
import type { Digest } from './digest.js';
import { SnapyardError } from './errors.js';

export interface ReadOptions {
  /** Batches read ahead of the consumer (default 6). */
  readAhead?: number;
  /** Largest batch of consecutive chunks fetched at once (default 2 MiB, at least one chunk). */
  batchBytes?: number;
}

/**
 * Streams bytes [start, end) of a blob from its chunks, every chunk verified.
 * Consecutive chunks are fetched in batches (one store call and one buffer per
 * batch), a few batches ahead, so memory is bounded by readAhead x batchBytes
 * whatever the blob size.
 */
export async function* readBlob(store: ChunkStore, index: ChunkIndex, start = 0, end = index.size, opts: ReadOptions = {}): AsyncGenerator<Buffer> {
  if (!(start >= 0 && end <= index.size && start <= end)) {
    throw new SnapyardError('RANGE_INVALID', `range ${start}-${end} outside blob of ${index.size} bytes`);
  }
  if (start === end) return;
  const readAhead = opts.readAhead ?? 6;
  const batchBytes = opts.batchBytes ?? 2 * 1024 * 1024;
  const first = index.chunkAt(start);
  const last = index.chunkAt(end - 1);
  const pending: Array<{ offset: number; data: Promise<Buffer> }> = [];
  let next = first;
  const fill = () => {
    while (pending.length < readAhead && next <= last) {
      const digests: Digest[] = [];
      const lengths: number[] = [];
      const offset = index.entry(next).offset;
      let bytes = 0;
      while (next <= last && (digests.length === 0 || bytes + index.lengths[next]! <= batchBytes)) {
        digests.push(index.digestAt(next));
        lengths.push(index.lengths[next]!);
        bytes += index.lengths[next]!;
        next++;
      }
      const data = store.getConcat(digests, lengths);
      data.catch(() => {}); // observed when awaited; no unhandled rejection if the consumer stops early
      pending.push({ offset, data });
    }
  };
  fill();
  while (pending.length > 0) {
    const batch = pending.shift()!;
    const data = await batch.data;
    fill();
    const from = Math.max(start - batch.offset, 0);
    const to = Math.min(end - batch.offset, data.byteLength);
    yield from === 0 && to === data.byteLength ? data : data.subarray(from, to);
  }
}

import type { ChunkIndex } from './chunk-index.js';
import type { ChunkStore } from './chunk-store.js';
import { SnapyardError } from './errors.js';

/**
 * Streams bytes [start, end) of a blob from its chunks, every chunk verified.
 * Reads up to `readAhead` chunks ahead, so memory is bounded by that many
 * chunks whatever the blob size.
 */
export async function* readBlob(store: ChunkStore, index: ChunkIndex, start = 0, end = index.size, readAhead = 4): AsyncGenerator<Buffer> {
  if (!(start >= 0 && end <= index.size && start <= end)) {
    throw new SnapyardError('RANGE_INVALID', `range ${start}-${end} outside blob of ${index.size} bytes`);
  }
  if (start === end) return;
  const first = index.chunkAt(start);
  const last = index.chunkAt(end - 1);
  const pending: Promise<Buffer>[] = [];
  let next = first;
  const fill = () => {
    while (pending.length < readAhead && next <= last) {
      const p = store.get(index.digestAt(next++));
      p.catch(() => {}); // observed when awaited; avoid an unhandled rejection if we stop early
      pending.push(p);
    }
  };
  for (let i = first; i <= last; i++) {
    fill();
    const data = await pending.shift()!;
    const e = index.entry(i);
    if (data.byteLength !== e.length) {
      throw new SnapyardError('INDEX_INVALID', `chunk ${e.digest} has ${data.byteLength} bytes, index says ${e.length}`);
    }
    const from = Math.max(start - e.offset, 0);
    const to = Math.min(end - e.offset, e.length);
    yield from === 0 && to === e.length ? data : data.subarray(from, to);
  }
}

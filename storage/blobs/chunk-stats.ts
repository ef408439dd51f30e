import type { ChunkList } from './chunk-index.js';

/** Chunk statistics of an image's chunk lists (`snapyard inspect`, the admin API's snapshot page): count, bytes, distinct chunks and their bytes, average size. */
export function chunkListStats(lists: ChunkList[]): { count: number; bytes: number; unique: number; uniqueBytes: number; avgSize: number } {
  const seen = new Set<string>();
  let count = 0;
  let bytes = 0;
  let uniqueBytes = 0;
  for (const l of lists) {
    for (let i = 0; i < l.count; i++) {
      count++;
      bytes += l.lengths[i]!;
      const k = l.rawDigestAt(i).toString('hex');
      if (!seen.has(k)) {
        seen.add(k);
        uniqueBytes += l.lengths[i]!;
      }
    }
  }
  return { count, bytes, unique: seen.size, uniqueBytes, avgSize: count === 0 ? 0 : Math.round(bytes / count) };
}

/**
 * Pack compaction, online (after GC deleted index rows): packs are sealed
 * first (every writer closes its current pack and written chunks' rows are
 * committed), so the packs listed before are never appended to again. A pack
 * with no live record is deleted; one whose live records are below `minLive`
 * of its size is rewritten (LocalChunkStore.rewritePack: live records copied
 * into a worker's current pack and fsync'ed, index rows moved in one
 * transaction, then the old pack deleted). A reader that located a chunk in
 * the old pack before the move reads it through a descriptor it already has
 * open, or fails to open the pack and retries at the new place.
 */
import type { LocalChunkStore } from './local-chunk-store.js';

export async function compactPacks(chunks: LocalChunkStore, minLive: number): Promise<{ rewritten: number; deleted: number; freedBytes: number }> {
  // Only packs that exist before the seal: the packs writers open after it are being written (their rows are not committed yet).
  const before = chunks.packNames();
  await chunks.sealPacks();
  const live = chunks.packLive();
  // Packs with no live record first: deleting them frees space without writing (on a full disk, that is what works).
  before.sort((a, b) => Number(live.has(a)) - Number(live.has(b)));
  let rewritten = 0;
  let deleted = 0;
  let freedBytes = 0;
  for (const pack of before) {
    let size: number;
    try {
      size = chunks.packSize(pack);
    } catch {
      continue;
    }
    const l = live.get(pack);
    if (l && l.storedBytes >= size * minLive) continue;
    const r = await chunks.rewritePack(pack);
    if (r.freedBytes > 0 || r.moved === 0) {
      if (r.moved === 0) deleted++;
      else rewritten++;
      freedBytes += r.freedBytes;
    }
  }
  return { rewritten, deleted, freedBytes };
}

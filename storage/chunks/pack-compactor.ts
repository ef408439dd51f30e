/**
 * Pack compaction, online (after GC deleted index rows): packs are sealed
 * first (every writer closes its current pack and written chunks' rows are
 * committed), so the packs listed before are never appended to again. A pack
 * with no live record is deleted; one whose live records are below `minLive`
 * of its size is rewritten; then, while the unused bytes left in packs are
 * more than `maxUnused` of the live bytes (restic's `prune --max-unused`),
 * the pack with the most unused bytes is rewritten (LocalChunkStore.rewritePack: live records copied
 * into a worker's current pack and fsync'ed, index rows moved in one
 * transaction, then the old pack deleted). A reader that located a chunk in
 * the old pack before the move reads it through a descriptor it already has
 * open, or fails to open the pack and retries at the new place.
 */
import type { LocalChunkStore } from './local-chunk-store.js';
import type { CompactOptions, CompactReport } from './maintained-chunk-store.js';


export async function compactPacks(chunks: LocalChunkStore, opts: CompactOptions): Promise<CompactReport> {
  // Only packs that exist before the seal: the packs writers open after it are being written (their rows are not committed yet).
  const names = chunks.packNames();
  await chunks.sealPacks();
  const live = chunks.packLive();
  const packs: Array<{ pack: string; size: number; live: number }> = [];
  for (const pack of names) {
    try {
      packs.push({ pack, size: chunks.packSize(pack), live: live.get(pack)?.storedBytes ?? 0 });
    } catch {
      /* gone already */
    }
  }
  // Packs with no live record first: deleting them frees space without writing (on a full disk, that is what works);
  // then the ones with the most unused bytes.
  packs.sort((a, b) => Number(a.live > 0) - Number(b.live > 0) || b.size - b.live - (a.size - a.live));
  const liveTotal = packs.reduce((n, p) => n + p.live, 0);
  let unused = packs.reduce((n, p) => n + Math.max(0, p.size - p.live), 0);
  let rewritten = 0;
  let deleted = 0;
  let freedBytes = 0;
  for (const { pack, size, live: l } of packs) {
    if (l > 0 && l >= size * opts.minLive && unused <= liveTotal * opts.maxUnused) continue;
    if (l >= size) continue;
    unused -= Math.max(0, size - l);
    const r = await chunks.rewritePack(pack);
    if (r.freedBytes > 0 || r.moved === 0) {
      if (r.moved === 0) deleted++;
      else rewritten++;
      freedBytes += r.freedBytes;
    }
  }
  return { rewritten, deleted, freedBytes };
}

/**
 * verify's chunk pass over a local store: every committed record read in
 * pack order, in batches of about BATCH_BYTES, decompressed and re-hashed on
 * the chunk workers, `lanes` batches at a time.
 */
import type { Digest } from '../digest.js';
import type { LocalChunkStore } from './local-chunk-store.js';
import type { VerifyChunksReport } from './maintained-chunk-store.js';
import type { RecordLocation } from './pack-files.js';

const BATCH_BYTES = 4 * 1024 * 1024;

export async function verifyPacks(chunks: LocalChunkStore, opts: { lanes: number }): Promise<VerifyChunksReport> {
  const all = chunks.committed();
  const batches: Array<{ digests: Digest[]; locs: RecordLocation[] }> = [];
  let storedBytes = 0;
  for (let i = 0; i < all.length; ) {
    const b = { digests: [] as Digest[], locs: [] as RecordLocation[] };
    let bytes = 0;
    while (i < all.length && (b.digests.length === 0 || bytes + all[i]!.loc.length <= BATCH_BYTES)) {
      bytes += all[i]!.loc.length;
      b.digests.push(all[i]!.digest);
      b.locs.push(all[i]!.loc);
      i++;
    }
    storedBytes += bytes;
    batches.push(b);
  }
  const corrupt = new Map<Digest, string>();
  const lanes = opts.lanes;
  await Promise.all(
    Array.from({ length: Math.min(lanes, batches.length) }, async () => {
      for (let b = batches.shift(); b; b = batches.shift()) {
        for (const bad of await chunks.verifyRecords(b.digests, b.locs)) corrupt.set(bad.digest, bad.message);
      }
    }),
  );
  return { corrupt, chunks: all.length, storedBytes };
}

/**
 * verify's chunk pass over a RemoteChunkStore: every catalog row, in pack
 * order, read with ranged GETs (one per run of adjacent records, ~4 MiB a
 * batch, `lanes` batches at a time) straight from the driver (no cache: what
 * is in the bucket is what is checked), each record's header checked, its
 * chunk decoded and re-hashed. A batch that fails as a whole (a missing pack,
 * a bad header) is read again one record at a time so each damaged chunk is
 * named.
 */
import { digestFromRaw, type Digest } from '../digest.js';
import { isSnapyardError } from '../errors.js';
import type { ChunkCatalog } from './chunk-catalog.js';
import type { ChunkCodec } from './chunk-codec.js';
import type { VerifyChunksReport } from './maintained-chunk-store.js';
import type { PackDriver } from './pack-driver.js';
import { RemoteRecordReader, type RemoteLocation } from './remote-chunk-reads.js';

const BATCH_BYTES = 4 * 1024 * 1024;

export async function verifyRemote(driver: PackDriver, catalog: ChunkCatalog, codec: ChunkCodec, opts: { lanes: number }): Promise<VerifyChunksReport> {
  const all: Array<{ digest: Digest; loc: RemoteLocation }> = [];
  for await (const c of catalog.all()) all.push({ digest: digestFromRaw(c.raw), loc: { pack: c.pack, offset: c.offset, length: c.length } });
  all.sort((a, b) => (a.loc.pack < b.loc.pack ? -1 : a.loc.pack > b.loc.pack ? 1 : a.loc.offset - b.loc.offset));
  const reader = new RemoteRecordReader(driver, { cacheBytes: 0, runBytes: BATCH_BYTES, readAheadBytes: 0 });
  const batches: Array<typeof all> = [];
  let storedBytes = 0;
  for (let i = 0; i < all.length; ) {
    const b: typeof all = [];
    let bytes = 0;
    while (i < all.length && (b.length === 0 || bytes + all[i]!.loc.length <= BATCH_BYTES)) {
      bytes += all[i]!.loc.length;
      b.push(all[i++]!);
    }
    storedBytes += bytes;
    batches.push(b);
  }
  const corrupt = new Map<Digest, string>();
  const check = async (b: typeof all): Promise<void> => {
    let stored: Buffer[];
    try {
      stored = await reader.fetch(b.map((c) => c.digest), b.map((c) => c.loc));
    } catch (e) {
      // A failing driver or catalog is an error, not a damaged chunk.
      if (!isSnapyardError(e, 'CHUNK_CORRUPT') && !isSnapyardError(e, 'NOT_FOUND')) throw e;
      if (b.length === 1) return void corrupt.set(b[0]!.digest, (e as Error).message);
      for (const one of b) await check([one]);
      return;
    }
    b.forEach((c, i) => {
      try {
        codec.decode(stored[i]!, c.digest);
      } catch (e) {
        corrupt.set(c.digest, (e as Error).message);
      }
    });
  };
  await Promise.all(
    Array.from({ length: Math.min(opts.lanes, batches.length) }, async () => {
      for (let b = batches.shift(); b; b = batches.shift()) await check(b);
    }),
  );
  return { corrupt, chunks: all.length, storedBytes };
}

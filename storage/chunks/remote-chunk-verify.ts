/**
 * verify's chunk pass over a RemoteChunkStore: every catalog row, pack by
 * pack in offset order (memory: one pack's rows, whatever the catalog
 * holds), read with ranged GETs (one per run of adjacent records, ~4 MiB a
 * batch, `lanes` batches at a time) straight from the driver (no cache: what
 * is in the bucket is what is checked), each record's header checked, its
 * chunk decoded and re-hashed (on the codec workers). A batch that fails as a
 * whole (a missing pack, a bad header, a damaged chunk) is checked again one
 * record at a time so each damaged chunk is named.
 */
import { digestFromRaw, type Digest } from '../digest.js';
import { isSnapyardError } from '../errors.js';
import type { ChunkCatalog } from './chunk-catalog.js';
import { CHUNK_HEADER_SIZE, MAX_CHUNK_RAW } from './chunk-codec.js';
import type { VerifyChunksReport } from './maintained-chunk-store.js';
import type { PackDriver } from './pack-driver.js';
import { RemoteRecordReader, type RemoteLocation } from './remote-chunk-reads.js';

const BATCH_BYTES = 4 * 1024 * 1024;
/** Raw bytes one batch may decode into. */
const MAX_DECODED = 64 * 1024 * 1024;

/** Decodes and verifies stored forms against their digests (throws CHUNK_CORRUPT naming one). */
export type VerifyDecoder = (stored: Buffer[], digests: Digest[], rawLengths: number[]) => Promise<unknown>;

type Row = { digest: Digest; loc: RemoteLocation };

export async function verifyRemote(driver: PackDriver, catalog: ChunkCatalog, decode: VerifyDecoder, opts: { lanes: number }): Promise<VerifyChunksReport> {
  const reader = new RemoteRecordReader(driver, { cacheBytes: 0, runBytes: BATCH_BYTES, readAheadBytes: 0 });
  const corrupt = new Map<Digest, string>();
  let chunks = 0;
  let storedBytes = 0;
  const check = async (b: Row[]): Promise<void> => {
    try {
      const stored = await reader.fetch(b.map((c) => c.digest), b.map((c) => c.loc));
      // The length each record's chunk header claims (decoding checks it and the digest), at most what a
      // chunk may be; a batch claiming more than MAX_DECODED in all is checked a record at a time.
      const rawLengths = stored.map((s) => (s.byteLength >= CHUNK_HEADER_SIZE ? Math.min(s.readUInt32LE(8), MAX_CHUNK_RAW) : 0));
      if (b.length > 1 && rawLengths.reduce((n, x) => n + x, 0) > MAX_DECODED) {
        for (const one of b) await check([one]);
        return;
      }
      await decode(stored, b.map((c) => c.digest), rawLengths);
    } catch (e) {
      // A failing driver or catalog is an error, not a damaged chunk.
      if (!isSnapyardError(e, 'CHUNK_CORRUPT') && !isSnapyardError(e, 'NOT_FOUND')) throw e;
      if (b.length === 1) return void corrupt.set(b[0]!.digest, (e as Error).message);
      for (const one of b) await check([one]);
    }
  };
  const packs = [...(await catalog.packLive()).keys()].sort();
  for (const pack of packs) {
    const rows = (await catalog.inPack(pack)).map((r) => ({ digest: digestFromRaw(r.raw), loc: { pack, offset: r.offset, length: r.length } }));
    rows.sort((a, b) => a.loc.offset - b.loc.offset);
    const batches: Row[][] = [];
    for (let i = 0; i < rows.length; ) {
      const b: Row[] = [];
      let bytes = 0;
      while (i < rows.length && (b.length === 0 || bytes + rows[i]!.loc.length <= BATCH_BYTES)) {
        bytes += rows[i]!.loc.length;
        b.push(rows[i++]!);
      }
      storedBytes += bytes;
      batches.push(b);
    }
    chunks += rows.length;
    await Promise.all(
      Array.from({ length: Math.min(opts.lanes, batches.length) }, async () => {
        for (let b = batches.shift(); b; b = batches.shift()) await check(b);
      }),
    );
  }
  return { corrupt, chunks, storedBytes };
}

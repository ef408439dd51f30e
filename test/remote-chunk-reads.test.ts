/**
 * The read side of the remote chunk store (issue 11, server memory), on real
 * S3 (Ceph RGW) + PostgreSQL and on a local pack directory + SQLite: streams
 * of batches (blob GETs, a commit's rebuild) leave nothing in the shared read
 * cache, however they interleave, while reads at random (delta encoding's)
 * are kept; decoded batches handed back with release() are reused, and a
 * batch not handed back is never overwritten.
 */
import { describe, expect, test } from 'vitest';
import type { Digest } from '../storage/digest.js';
import { MemoryBudget } from '../storage/memory-budget.js';
import { randomBytes } from './helpers/qcow2-fixtures.js';
import { localSqliteSite, s3PostgresSite, type Site } from './helpers/remote-stores.js';

const SITES: Array<{ name: string; make(): Promise<Site> }> = [
  { name: 's3+postgres', make: s3PostgresSite },
  { name: 'local+sqlite', make: async () => localSqliteSite() },
];

const CHUNK = 64 * 1024;
/** Eight chunks a batch: 512 KiB, decoded on the codec workers (not inline). */
const PER_BATCH = 8;

describe.each(SITES)('RemoteChunkStore reads on $name', ({ make }) => {
  test('two interleaved streams of batches keep nothing in the read cache, a read at random is kept; released batches are reused, kept ones stay intact', async () => {
    const site = await make();
    const cache = new MemoryBudget(64 * 1024 * 1024).cache<Digest, Buffer>('remote-reads', (b) => b.byteLength);
    const { store } = await site.replica({ readCache: cache, workers: 2 });
    // 64 chunks read as batches, 64 more past what their read-ahead (1 MiB) reaches.
    const chunks = Array.from({ length: 128 }, (_, i) => randomBytes(5000 + i, CHUNK));
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.flush();
    const batch = (k: number) => ({ digests: ds.slice(k * PER_BATCH, (k + 1) * PER_BATCH), want: Buffer.concat(chunks.slice(k * PER_BATCH, (k + 1) * PER_BATCH)) });
    const read = (k: number) => store.getConcat(batch(k).digests, Array(PER_BATCH).fill(CHUNK));

    // The first batch is kept and never released: later reads must not write into it.
    const kept = await read(0);
    expect(kept.equals(batch(0).want)).toBe(true);
    // Stream A reads batches 1, 2, 3, stream B batches 4, 5, 6, 7, at the same time, in the same packs.
    const stream = async (ks: number[]) => {
      for (const k of ks) {
        const got = await read(k);
        expect(got.equals(batch(k).want)).toBe(true);
        store.release(got);
      }
    };
    for (let round = 0; round < 3; round++) await Promise.all([stream([1, 2, 3]), stream([4, 5, 6, 7])]);
    expect(kept.equals(batch(0).want)).toBe(true);
    expect(cache.bytes).toBe(0);

    // A chunk read on its own (delta encoding's dictionaries) is kept.
    expect((await store.getStored(ds[120]!)).byteLength).toBeGreaterThan(CHUNK);
    expect(cache.bytes).toBeGreaterThan(CHUNK);
    await store.close();
  });
});

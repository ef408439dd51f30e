/**
 * RemoteChunkStore's maintenance (MaintainedRemoteChunkStore, issue 11): gc's
 * sweep with its keep function and write barrier, compaction of the packs in
 * the bucket (rewrite and delete, bytes left <= 1.1x live), verify finding a
 * corrupted byte of an object, quarantine. On real S3 (Ceph RGW) +
 * PostgreSQL and on a local pack directory + SQLite.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { CHUNK_HEADER_SIZE, ChunkCodec } from '../storage/chunks/chunk-codec.js';
import { RECORD_HEADER_SIZE } from '../storage/chunks/pack-files.js';
import { rawOf, sha256, type Digest } from '../storage/digest.js';
import { randomBytes } from './helpers/qcow2-fixtures.js';
import { decompressWithDict } from '../storage/delta/dict-codec.js';
import { bucketBytes, localSqliteSite, newDir, s3PostgresSite, type Site } from './helpers/remote-stores.js';

/** A chunk's record in a pack: its header, then the stored form (random bytes: a zstd frame of raw blocks, chunk-codec.ts). */
const recordOf = (chunk: Buffer) => RECORD_HEADER_SIZE + new ChunkCodec(1).encode(chunk).byteLength;

const SITES: Array<{ name: string; make(): Promise<Site> }> = [
  { name: 's3+postgres', make: s3PostgresSite },
  { name: 'local+sqlite', make: async () => localSqliteSite() },
];

/** Far in the future: every row is older than this. */
const ALL = () => Date.now() + 3_600_000;

describe.each(SITES)('RemoteChunkStore maintenance on $name', ({ make }) => {
  test('sweep deletes what keep rejects, but not what a lookup found during the mark; dry run only counts', async () => {
    const site = await make();
    const { store } = await site.replica();
    const chunks = [0, 1, 2, 3].map((i) => randomBytes(100 + i, 50_000));
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.flush();
    const keep = (d: Digest) => d === ds[0];

    const dry = await store.sweep(ALL(), keep, true);
    expect(dry.chunks).toBe(3);
    expect(dry.storedBytes).toBe(3 * recordOf(chunks[0]!)); // incompressible: a frame of raw blocks, the same size for each
    expect((await store.stats()).chunks).toBe(4);

    store.beginMark();
    expect(await store.rawLengths([rawOf(ds[1]!), rawOf(sha256(Buffer.from('none')))])).toEqual([50_000, null]);
    const [hit] = await store.resolvePrefixes([rawOf(ds[2]!).subarray(0, 6)]);
    expect(Buffer.isBuffer(hit) && hit.equals(rawOf(ds[2]!))).toBe(true);
    const r = await store.sweep(ALL(), keep, false);
    store.endMark();
    expect(r.chunks).toBe(1); // ds[3] only: ds[1] and ds[2] were found during the mark
    expect(await store.has(ds[3]!)).toBe(false);
    expect((await store.get(ds[1]!)).equals(chunks[1]!)).toBe(true);

    // Outside a mark, lookups are not remembered.
    await store.storedLengths([rawOf(ds[1]!)]);
    expect((await store.sweep(ALL(), keep, false)).chunks).toBe(2);
    const s = await store.stats();
    expect(s).toEqual({ chunks: 1, stored: recordOf(chunks[0]!), raw: 50_000 });
  });

  test('lookups for a push (touch) refresh the chunks they find, so a later sweep past their old time keeps them; plain lookups do not', async () => {
    const site = await make();
    let t = Date.now() - 600_000;
    const { store } = await site.replica({ now: () => t });
    const chunks = [0, 1, 2].map((i) => randomBytes(300 + i, 20_000));
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.flush(); // all three recorded at t
    t += 300_000;
    expect(await store.rawLengths([rawOf(ds[0]!), rawOf(sha256(Buffer.from('none')))], { touch: true })).toEqual([20_000, null]);
    const [hit] = await store.resolvePrefixes([rawOf(ds[1]!).subarray(0, 6)], { touch: true });
    expect(Buffer.isBuffer(hit) && hit.equals(rawOf(ds[1]!))).toBe(true);
    await store.rawLengths([rawOf(ds[2]!)]); // no touch
    // A gc whose cutoff lies between the first time and the touch keeps the touched chunks only.
    const r = await store.sweep(t - 1000, () => false, false);
    expect(r.chunks).toBe(1);
    expect(await store.has(ds[2]!)).toBe(false);
    expect((await store.get(ds[0]!)).equals(chunks[0]!)).toBe(true);
    expect((await store.get(ds[1]!)).equals(chunks[1]!)).toBe(true);
  });

  test("a push's prefix lookups go to the catalog 4096 at a time, not one by one (issue 11: no round trip per chunk)", async () => {
    const site = await make();
    const { store, calls } = await site.replica();
    const ds: Digest[] = [];
    for (let i = 0; i < 50; i++) ds.push((await store.add(randomBytes(900 + i, 1000))).digest);
    await store.flush();
    // 5000 prefixes (the 50 held ones, 100 times over, as a blob's index repeats chunks): 2 catalog calls.
    const prefixes = Array.from({ length: 5000 }, (_, i) => rawOf(ds[i % 50]!).subarray(0, 10));
    const before = calls.resolvePrefixes ?? 0;
    const hits = await store.resolvePrefixes(prefixes, { touch: true });
    expect((calls.resolvePrefixes ?? 0) - before).toBe(2);
    expect(hits.every((h, i) => Buffer.isBuffer(h) && h.equals(rawOf(ds[i % 50]!)))).toBe(true);
  });

  test('chunks read one by one after prepareReads cost one catalog lookup in all (the delta encoder reads that way)', async () => {
    const site = await make();
    const { store } = await site.replica();
    const chunks = Array.from({ length: 100 }, (_, i) => randomBytes(800 + i, 2000));
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.flush();
    await store.close();
    const { store: reader, calls } = await site.replica({ readCacheBytes: 0 });
    await reader.prepareReads(ds);
    for (let i = 0; i < ds.length; i++) expect((await reader.get(ds[i]!)).equals(chunks[i]!)).toBe(true);
    expect(calls.lookup ?? 0).toBe(1);
  });

  test('with a local pack cache, reads of what the store just put skip the driver; verify still checks the bucket itself', async () => {
    const site = await make();
    const { store, spoolDir } = await site.replica({ readCacheBytes: 0, packCacheDir: join(newDir(), 'pack-cache') });
    const chunks = [0, 1, 2].map((i) => randomBytes(600 + i, 40_000));
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.flush();
    const bucket = store.bucket;
    const gets = bucket.stats().gets;
    for (let i = 0; i < 3; i++) expect((await store.get(ds[i]!)).equals(chunks[i]!)).toBe(true);
    expect(bucket.stats().gets).toBe(gets); // all three from the local copy
    // The bucket's copy goes bad (flipped byte; delete + put: packs are immutable); the local one is fine.
    const listed: Array<{ name: string; size: number }> = [];
    for await (const p of bucket.list()) listed.push(p);
    const { name, size } = listed[0]!;
    const bytes = await bucket.get(name, 0, size);
    bytes[RECORD_HEADER_SIZE + CHUNK_HEADER_SIZE + 50]! ^= 0xff;
    const file = join(spoolDir, '..', 'bad.pack');
    writeFileSync(file, bytes);
    await bucket.delete([name]);
    await bucket.put(name, file);
    expect([...(await store.verifyChunks({ lanes: 1 })).corrupt.keys()]).toEqual([ds[0]]);
  });

  test('delta encoding reads: sketches and dictionary compression on the codec workers match the inline ones', async () => {
    const site = await make();
    const base = randomBytes(700, 300_000);
    const similar = Buffer.concat([base.subarray(0, 150_000), randomBytes(701, 1000), base.subarray(151_000)]);
    const { store } = await site.replica({ workers: 2 });
    const ds = [(await store.add(similar)).digest, (await store.add(base)).digest];
    await store.flush();
    const inline = (await site.replica({ workers: 0 })).store;
    const lengths = [similar.byteLength, base.byteLength];
    const [w, i] = [await store.sketchMany(ds, lengths), await inline.sketchMany(ds, lengths)];
    expect(w.map((x) => x.toString('hex'))).toEqual(i.map((x) => x.toString('hex')));
    const packed = await store.compressWithDictOf(ds, lengths, 6);
    expect(packed.equals(await inline.compressWithDictOf(ds, lengths, 6))).toBe(true);
    expect(decompressWithDict(packed, base, similar.byteLength).equals(similar)).toBe(true);
    expect(packed.byteLength).toBeLessThan(20_000); // the held chunk made it small
  });

  test('compact deletes dead packs and rewrites mixed ones: the bucket holds <= 1.1x the live bytes, the live chunks read back from a fresh store', async () => {
    const site = await make();
    const { store } = await site.replica({ segmentBytes: 256 * 1024, readCacheBytes: 0 });
    // 0..9 live only, 10..19 dead only, 20..39 alternating: pure live packs, pure dead packs, mixed packs.
    const chunks = Array.from({ length: 40 }, (_, i) => randomBytes(1000 + i, 64 * 1024));
    const live = (i: number) => i < 10 || (i >= 20 && i % 2 === 0);
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.flush();
    const driver = await site.driver();
    const before = await bucketBytes(driver);
    expect(before.packs).toBeGreaterThanOrEqual(10);
    const keepSet = new Set(ds.filter((_, i) => live(i)));
    expect((await store.sweep(ALL(), (d) => keepSet.has(d), false)).chunks).toBe(20);
    // Read once: the store now remembers where they are (its location cache).
    for (let i = 0; i < chunks.length; i++) if (live(i)) expect((await store.getConcat([ds[i]!], [64 * 1024])).equals(chunks[i]!)).toBe(true);

    const report = await store.compact({ minLive: 0.5, maxUnused: 0.05 });
    expect(report.deleted).toBeGreaterThanOrEqual(2);
    expect(report.rewritten).toBeGreaterThanOrEqual(1);
    const after = await bucketBytes(driver);
    const liveBytes = (await store.stats()).stored;
    expect(liveBytes).toBe(20 * recordOf(chunks[0]!));
    expect(after.bytes).toBeLessThanOrEqual(1.1 * liveBytes);
    expect(report.freedBytes).toBe(before.bytes - after.bytes);
    expect((await store.verifyChunks({ lanes: 2 })).corrupt.size).toBe(0);
    // The same store reads them again: the packs it remembered are gone, so it locates them afresh.
    for (let i = 0; i < chunks.length; i++) if (live(i)) expect((await store.getConcat([ds[i]!], [64 * 1024])).equals(chunks[i]!)).toBe(true);
    await store.close();

    const fresh = await site.replica();
    for (let i = 0; i < chunks.length; i++) {
      expect(await fresh.store.has(ds[i]!)).toBe(live(i));
      if (live(i)) expect((await fresh.store.get(ds[i]!)).equals(chunks[i]!)).toBe(true);
    }
    // Nothing left to do.
    expect(await fresh.store.compact({ minLive: 0.5, maxUnused: 0.05 })).toEqual({ rewritten: 0, deleted: 0, freedBytes: 0 });
  });

  test('verifyChunks names the chunk whose object byte was flipped; quarantine copies its record aside and forgets it', async () => {
    const site = await make();
    const { store, spoolDir } = await site.replica();
    const chunks = [0, 1, 2, 3, 4].map((i) => randomBytes(200 + i, 30_000));
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.flush();
    const clean = await store.verifyChunks({ lanes: 2 });
    expect(clean.corrupt.size).toBe(0);
    expect(clean.chunks).toBe(5);

    // Flip one payload byte of the third record in the object (delete + put: packs are immutable).
    const driver = store.driver;
    const listed: Array<{ name: string; size: number }> = [];
    for await (const p of driver.list()) listed.push(p);
    expect(listed.length).toBe(1);
    const { name, size } = listed[0]!;
    const bytes = await driver.get(name, 0, size);
    const recSize = recordOf(chunks[0]!);
    bytes[2 * recSize + RECORD_HEADER_SIZE + CHUNK_HEADER_SIZE + 100]! ^= 0xff;
    const file = join(newDir(), 'bad.pack');
    writeFileSync(file, bytes);
    await driver.delete([name]);
    await driver.put(name, file);

    const bad = await store.verifyChunks({ lanes: 2 });
    expect([...bad.corrupt.keys()]).toEqual([ds[2]]);
    expect(bad.chunks).toBe(5);

    const where = await store.quarantine(ds[2]!);
    expect(where).toBe(join(spoolDir, '..', 'quarantine', `${ds[2]!.slice(7)}.${name}.${2 * recSize}.rec`));
    expect(existsSync(where!)).toBe(true);
    expect(readFileSync(where!).equals(bytes.subarray(2 * recSize, 3 * recSize))).toBe(true);
    expect(await store.has(ds[2]!)).toBe(false);
    expect(await store.quarantine(ds[2]!)).toBe(null);
    const again = await store.verifyChunks({ lanes: 1 });
    expect(again.corrupt.size).toBe(0);
    expect(again.chunks).toBe(4);
    // Pushed again, it is written anew and reads back.
    expect((await store.add(chunks[2]!)).written).toBe(true);
    await store.flush();
    expect((await store.get(ds[2]!)).equals(chunks[2]!)).toBe(true);
  });
});

describe('RemoteChunkStore compaction beside another replica (s3+postgres)', () => {
  test("another writer's packs are left alone while recent (their rows may not be committed yet), compacted after the grace", async () => {
    const site = await s3PostgresSite();
    const a = await site.replica();
    const b = await site.replica();
    const c = randomBytes(77, 40_000);
    const d = (await b.store.add(c)).digest;
    await b.store.flush();
    expect((await a.store.sweep(ALL(), () => false, false)).chunks).toBe(1);
    const driver = await site.driver();
    expect((await a.store.compact({ minLive: 0.5, maxUnused: 0 })).deleted).toBe(0);
    expect((await bucketBytes(driver)).packs).toBe(1);
    const late = await site.replica({ compactGraceMs: 0 });
    expect(await late.store.compact({ minLive: 0.5, maxUnused: 0 })).toMatchObject({ deleted: 1, rewritten: 0 });
    expect((await bucketBytes(driver)).packs).toBe(0);
    expect(await b.store.has(d)).toBe(false);
  });
});

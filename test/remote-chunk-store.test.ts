/**
 * RemoteChunkStore (issue 11): chunks in packs through a PackDriver, located
 * through a ChunkCatalog. The same cases on real S3 (Ceph RGW) + PostgreSQL
 * and on a local pack directory + SQLite (the store does not depend on S3);
 * then what replicas sharing one bucket prefix and one database do: reads
 * across replicas, dedup across them, chunks swept under a writer, a writer
 * killed before its put, and the requests a 64 MiB blob costs.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, test } from 'vitest';
import { ingestBlob } from '../storage/blobs/blob-ingest.js';
import { readBlob } from '../storage/blobs/blob-reader.js';
import type { BlobIndex } from '../storage/blobs/blob-index.js';
import { ChunkCodec, ENCODING_ZSTD } from '../storage/chunks/chunk-codec.js';
import type { ChunkStore } from '../storage/chunks/chunk-store.js';
import type { RemoteChunkStore } from '../storage/chunks/remote-chunk-store.js';
import { rawOf, sha256, type Digest } from '../storage/digest.js';
import { isSnapyardError } from '../storage/errors.js';
import { randomBytes, textBytes } from './helpers/qcow2-fixtures.js';
import { localSqliteSite, newDir, s3PostgresSite, type Site } from './helpers/remote-stores.js';

const SITES: Array<{ name: string; make(): Promise<Site> }> = [
  { name: 's3+postgres', make: s3PostgresSite },
  { name: 'local+sqlite', make: async () => localSqliteSite() },
];

/** `size` bytes, alternating random and text pieces of ~`piece` bytes. */
function mixed(seed: number, size: number, piece = 300_000): Buffer {
  const parts: Buffer[] = [];
  for (let at = 0, i = 0; at < size; i++) {
    const n = Math.min(piece, size - at);
    parts.push(i % 2 === 0 ? randomBytes(seed + i, n) : textBytes(seed + i, n));
    at += n;
  }
  return Buffer.concat(parts);
}

async function* pieces(buf: Buffer, size = 1 << 20): AsyncGenerator<Buffer> {
  for (let at = 0; at < buf.byteLength; at += size) yield buf.subarray(at, at + size);
}

async function readAll(store: ChunkStore, index: BlobIndex, batchBytes?: number): Promise<Buffer> {
  const out: Buffer[] = [];
  for await (const b of readBlob(store, index, 0, index.size, batchBytes ? { batchBytes } : {})) out.push(Buffer.from(b));
  return Buffer.concat(out);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    return isSnapyardError(e) ? e.code : `untyped: ${String(e)}`;
  }
}

async function packs(site: Site): Promise<Map<string, number>> {
  const d = await site.driver();
  const out = new Map<string, number>();
  for await (const p of d.list()) out.set(p.name, p.size);
  return out;
}

describe.each(SITES)('RemoteChunkStore on $name', ({ make }) => {
  test('add / put / get / getConcat / getStored are byte-exact, before and after flush and from a fresh store', async () => {
    const site = await make();
    const { store, spoolDir } = await site.replica();
    const chunks = [randomBytes(1, 100_000), textBytes(2, 100_000), Buffer.from('x'), Buffer.alloc(0), randomBytes(3, 300_000)];
    const digests: Digest[] = [];
    for (const c of chunks) {
      const r = await store.add(c);
      expect(r).toMatchObject({ digest: sha256(c), size: c.byteLength, written: true });
      digests.push(r.digest);
    }
    expect((await store.add(chunks[0]!)).written).toBe(false);
    expect(await codeOf(store.put(sha256(chunks[1]!), chunks[0]!))).toBe('DIGEST_MISMATCH');
    expect((await store.put(digests[1]!, chunks[1]!)).written).toBe(false);
    const check = async (s: RemoteChunkStore) => {
      for (let i = 0; i < chunks.length; i++) {
        expect((await s.get(digests[i]!)).equals(chunks[i]!)).toBe(true);
        expect(new ChunkCodec().decode(await s.getStored(digests[i]!), digests[i]!).equals(chunks[i]!)).toBe(true);
      }
      const order = [0, 1, 0, 4, 2, 3, 1];
      const cat = await s.getConcat(order.map((i) => digests[i]!), order.map((i) => chunks[i]!.byteLength));
      expect(cat.equals(Buffer.concat(order.map((i) => chunks[i]!)))).toBe(true);
      // The text chunk is stored compressed.
      const text = await s.getStored(digests[1]!);
      expect(text.readUInt32LE(4)).toBe(ENCODING_ZSTD);
      expect(text.byteLength).toBeLessThan(chunks[1]!.byteLength / 2);
      expect(await codeOf(s.getConcat([digests[0]!], [99_999]))).toBe('CHUNK_CORRUPT');
      expect(await codeOf(s.get(sha256(Buffer.from('never stored'))))).toBe('CHUNK_MISSING');
    };
    await check(store); // from the spool
    expect(readdirSync(spoolDir).length).toBe(1);
    await store.flush();
    expect(readdirSync(spoolDir)).toEqual([]);
    await check(store); // from the pack
    expect((await packs(site)).size).toBe(1);
    await store.close();
    const fresh = await site.replica();
    await check(fresh.store);
    expect((await fresh.store.add(chunks[4]!)).written).toBe(false);
  });

  test('chunks read one at a time in pack order cost one GET per MiB read ahead, not one per chunk', async () => {
    const site = await make();
    const { store } = await site.replica();
    const chunks = Array.from({ length: 40 }, (_, i) => randomBytes(500 + i, 64 * 1024));
    const ds: Digest[] = [];
    for (const c of chunks) ds.push((await store.add(c)).digest);
    await store.close();
    const fresh = await site.replica();
    for (let i = 0; i < chunks.length; i++) expect((await fresh.store.get(ds[i]!)).equals(chunks[i]!)).toBe(true);
    const got = fresh.store.driver.stats();
    // 40 records of ~64 KiB (2.6 MB): the first alone, then (going on from it) 3 GETs of 1 MiB (without read-ahead: 40).
    expect(got.gets).toBeLessThanOrEqual(5);
    // Out of order (each before, or more than 1 MiB after, the last GET): no read-ahead, one GET each, nothing read but what is asked.
    const other = await site.replica();
    for (const i of [39, 0, 20, 2]) expect((await other.store.get(ds[i]!)).equals(chunks[i]!)).toBe(true);
    // A record: its 40-byte header, then the stored form (a zstd frame of raw blocks for random bytes).
    const record = 40 + new ChunkCodec(1).encode(chunks[0]!).byteLength;
    expect(record).toBeLessThanOrEqual(64 * 1024 + 52 + 64);
    expect(other.store.driver.stats()).toMatchObject({ gets: 4, bytesGot: 4 * record });
    expect(got.bytesGot).toBeLessThanOrEqual(40 * record + 1024 * 1024);
  });

  test('a blob ingested with the store writer reads back byte-exact through readBlob; again, it adds nothing', async () => {
    const site = await make();
    const { store, calls } = await site.replica({ segmentBytes: 2 * 1024 * 1024 });
    const blob = mixed(10, 7 * 1024 * 1024 + 12345);
    const r = await ingestBlob(store, pieces(blob));
    expect(r.digest).toBe(sha256(blob));
    expect(r.newChunks).toBe(r.chunks);
    // Small segments: several packs, put as they filled.
    expect((await packs(site)).size).toBeGreaterThan(1);
    // Looked up a batch per call (the blob's chunks, then the index chunk), never a call per chunk.
    expect(calls.lookup).toBeLessThanOrEqual(Math.ceil(r.chunks / 100) + 2);
    expect((await readAll(store, r.index)).equals(blob)).toBe(true);
    await store.close();
    const again = await site.replica();
    const r2 = await ingestBlob(again.store, pieces(blob));
    expect(r2.newChunks).toBe(0);
    expect((await readAll(again.store, r2.index)).equals(blob)).toBe(true);
  });

  test('chunks are durable only after flush: missingDurable and durable ask the catalog', async () => {
    const site = await make();
    const { store, calls } = await site.replica();
    const chunks = Array.from({ length: 50 }, (_, i) => randomBytes(100 + i, 20_000));
    const w = store.writer();
    for (const c of chunks) await w.add(c);
    expect(await w.finish()).toMatchObject({ newChunks: 50 });
    const raws = chunks.map((c) => rawOf(sha256(c)));
    expect(await store.has(sha256(chunks[7]!))).toBe(true);
    expect(await store.durable(sha256(chunks[7]!))).toBe(false);
    const before = calls.lookup ?? 0;
    expect(await store.missingDurable(raws)).toEqual(raws.map((_, i) => i));
    expect(calls.lookup! - before).toBe(1);
    expect(await (await site.catalog()).lookup(raws)).toEqual(raws.map(() => null));
    await store.flush();
    expect(await store.missingDurable(raws)).toEqual([]);
    expect(await store.durable(sha256(chunks[7]!))).toBe(true);
    const listed = new Set<string>();
    for await (const c of store.list()) listed.add(c.digest);
    expect(listed.size).toBe(50);
    await store.remove(sha256(chunks[0]!));
    expect(await store.missingDurable(raws)).toEqual([0]);
    expect(await codeOf(store.get(sha256(chunks[0]!)))).toBe('CHUNK_MISSING');
  });

  test("a writer whose chunks wait in a stalled writer's unsent batch finishes: it sends that batch", async () => {
    const site = await make();
    const { store } = await site.replica();
    const shared = Array.from({ length: 20 }, (_, i) => randomBytes(300 + i, 20_000));
    // A stalls with its chunks queued (a batch sends at 1024 chunks or 8 MiB): an OCI upload session between PATCHes.
    const a = store.writer();
    for (const c of shared) await a.add(c);
    const b = store.writer();
    for (const c of [...shared, randomBytes(399, 20_000)]) await b.add(c);
    const finished = await Promise.race([b.finish().then(() => 'finished'), new Promise((r) => setTimeout(() => r('still waiting on the stalled writer'), 10_000))]);
    expect(finished).toBe('finished');
    await store.flush();
    expect(await store.missingDurable(shared.map((c) => rawOf(sha256(c))))).toEqual([]);
    expect(await a.finish()).toMatchObject({ newChunks: 20 });
  });

  test('a corrupt byte in a pack is ChunkCorruptError, in a payload and in a record header', async () => {
    const site = await make();
    const { store } = await site.replica();
    const a = textBytes(20, 200_000);
    const b = randomBytes(21, 100_000);
    const [da, db] = [(await store.add(a)).digest, (await store.add(b)).digest];
    await store.flush();
    await store.close();
    const driver = await site.driver();
    const [pack, size] = [...(await packs(site))][0]!;
    const bytes = await driver.get(pack!, 0, size!);
    const [ea, eb] = await (await site.catalog()).lookup([rawOf(da), rawOf(db)]);
    bytes[ea!.offset + 40 + Math.floor(ea!.length / 2)]! ^= 0x10; // a's payload
    bytes[eb!.offset + 10]! ^= 0x01; // b's record header (its digest)
    const file = join(newDir(), 'corrupt.pack');
    writeFileSync(file, bytes);
    await driver.delete([pack!]);
    await driver.put(pack!, file);
    const { store: reader } = await site.replica();
    expect(await codeOf(reader.get(da))).toBe('CHUNK_CORRUPT');
    expect(await codeOf(reader.getConcat([da], [a.byteLength]))).toBe('CHUNK_CORRUPT');
    expect(await codeOf(reader.get(db))).toBe('CHUNK_CORRUPT');
    expect(await codeOf(reader.getStored(db))).toBe('CHUNK_CORRUPT');
  });
});

describe('RemoteChunkStore replicas on one bucket prefix and one database (s3+postgres)', () => {
  test('chunks one flushed the other reads; the second adding them writes no byte and only touches', async () => {
    const site = await s3PostgresSite();
    let clock = 1_000_000;
    const a = await site.replica({ now: () => clock });
    const b = await site.replica({ now: () => clock });
    const blob = mixed(30, 5 * 1024 * 1024);
    const r = await ingestBlob(a.store, pieces(blob));
    expect((await readAll(b.store, r.index)).equals(blob)).toBe(true);
    const catalog = await site.catalog();
    const statsBefore = await catalog.stats();
    const packsBefore = await packs(site);
    clock += 60_000;
    const r2 = await ingestBlob(b.store, pieces(blob));
    expect(r2.newChunks).toBe(0);
    expect(b.store.driver.stats()).toMatchObject({ puts: 0, bytesPut: 0 });
    expect(await catalog.stats()).toEqual(statsBefore);
    expect(await packs(site)).toEqual(packsBefore);
    // Touched: every chunk's time is the second ingest's.
    const first = r.index.blobPieces(0, r.index.size).next().value!;
    const [entry] = await catalog.lookup([rawOf(first.list.digestAt(first.i))]);
    expect(entry!.mtimeMs).toBe(clock);
    expect((await readAll(a.store, r2.index)).equals(blob)).toBe(true);
  });

  test('a chunk gc swept after the writer found it held is written again: copied at the flush, or added anew when its pack is gone too', async () => {
    const site = await s3PostgresSite();
    const a = await site.replica();
    const b = await site.replica();
    const catalog = await site.catalog();
    const chunks = Array.from({ length: 20 }, (_, i) => randomBytes(200 + i, 30_000));
    const raws = chunks.map((c) => rawOf(sha256(c)));
    for (const c of chunks) await a.store.add(c);
    await a.store.flush();
    const [packA] = [...(await packs(site)).keys()];

    // B finds them held (touched); gc removes the rows of the first ten before B flushes.
    let w = b.store.writer();
    for (const c of chunks) expect((await w.add(c)).digest).toBe(sha256(c));
    expect(await w.finish()).toEqual({ newChunks: 0, newStoredBytes: 0 });
    await catalog.remove(raws.slice(0, 10));
    await b.store.flush();
    expect(b.store.driver.stats().puts).toBe(1); // the ten, copied from A's pack into a pack of B's
    expect(await b.store.missingDurable(raws)).toEqual([]);
    expect((await catalog.lookup(raws.slice(0, 10))).every((e) => e !== null && e.pack !== packA)).toBe(true);

    // Now the rows and A's pack go: B's touches come back absent with nothing to copy from.
    const c = await site.replica();
    w = c.store.writer();
    for (const ch of chunks.slice(10)) await w.add(ch);
    await w.finish();
    await catalog.remove(raws.slice(10));
    await (await site.driver()).delete([packA!]);
    await c.store.flush();
    expect(await c.store.missingDurable(raws.slice(10))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(await codeOf(a.store.get(sha256(chunks[15]!)))).toBe('CHUNK_MISSING');
    // Added again, they are written.
    for (const ch of chunks.slice(10)) expect((await c.store.add(ch)).written).toBe(true);
    await c.store.flush();
    expect(await c.store.missingDurable(raws)).toEqual([]);
    for (const ch of chunks) expect((await a.store.get(sha256(ch))).equals(ch)).toBe(true);
  });

  test('a writer killed before its put leaves a spool file and no catalog row; the next start deletes the spool', async () => {
    const site = await s3PostgresSite();
    const spoolDir = join(newDir(), 'spool');
    const child = spawn(process.execPath, ['--import', 'tsx', resolve(import.meta.dirname, 'helpers/remote-store-child.ts'), spoolDir, '40', '500'], {
      env: { ...process.env, ...site.env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_code, sig) => r(sig)));
    const line = await new Promise<string>((res, rej) => {
      createInterface({ input: child.stdout! }).once('line', res);
      child.once('exit', (code) => rej(new Error(`child exited ${code}`)));
    });
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const { digests, spool } = JSON.parse(line) as { digests: Digest[]; spool: string[] };
    expect(digests.length).toBe(40);
    expect(spool).toHaveLength(1);
    const left = readdirSync(spoolDir);
    expect(left).toEqual(spool);
    // The segment holds the 40 records (so the chunks were written, only never put).
    expect(readFileSync(join(spoolDir, left[0]!)).byteLength).toBeGreaterThan(40 * 50_000);
    expect(await (await site.catalog()).lookup(digests.map(rawOf))).toEqual(digests.map(() => null));
    expect((await packs(site)).size).toBe(0);
    const next = await site.replica({ spoolDir });
    expect(next.store.cleanedSegments).toBe(1);
    expect(readdirSync(spoolDir)).toEqual([]);
    expect(await next.store.missingDurable(digests.map(rawOf))).toHaveLength(40);
  });

  test('requests for a 64 MiB blob: PUTs per GB pushed, GETs and bytes per MB read with runs coalesced', async () => {
    const site = await s3PostgresSite();
    const a = await site.replica();
    const blob = mixed(40, 64 * 1024 * 1024, 1024 * 1024);
    const r = await ingestBlob(a.store, pieces(blob));
    const put = a.store.driver.stats();
    const stored = [...(await packs(site)).values()].reduce((x, y) => x + y, 0);
    const GB = 1024 ** 3;
    const MB = 1024 ** 2;
    // One pack per 64 MiB segment (plus the index chunk's), each one PUT.
    expect(put.puts).toBeLessThanOrEqual(Math.ceil(stored / (64 * MB)) + 1);
    expect(put.bytesPut).toBe(stored);
    const figures: Record<string, number> = {
      chunks: r.chunks,
      storedMB: stored / MB,
      putsPerGBPushed: put.puts / (blob.byteLength / GB),
      catalogCallsPerBlobPush: Object.values(a.calls).reduce((x, y) => x + y, 0),
    };
    for (const batch of [2 * MB, 8 * MB]) {
      const b = await site.replica();
      let calls = 0;
      const counting: ChunkStore = Object.create(b.store, {
        getConcat: { value: (d: Digest[], l: number[]) => (calls++, b.store.getConcat(d, l)) },
      }) as ChunkStore;
      expect((await readAll(counting, r.index, batch)).equals(blob)).toBe(true);
      const got = b.store.driver.stats();
      // One GET per readBlob batch (its chunks lie end to end in one pack), or two where a pack ends.
      expect(got.gets).toBeLessThanOrEqual(calls + put.puts);
      // Hardly anything read twice or not needed: a run shorter than the read-ahead (1 MiB) reads on, and the records it
      // reads whole serve the next batch from the cache; only a record cut at its end is read again.
      expect(got.bytesGot).toBeLessThanOrEqual(stored + 2 * MB);
      expect(got.bytesGot).toBeGreaterThan(stored - 1024 * 1024);
      figures[`getsPerMBRead@${batch / MB}MiB`] = got.gets / (blob.byteLength / MB);
      figures[`getsPerGBRead@${batch / MB}MiB`] = got.gets / (blob.byteLength / GB);
      figures[`bytesGotPerByteRead@${batch / MB}MiB`] = got.bytesGot / blob.byteLength;
      figures[`catalogLookups@${batch / MB}MiB`] = b.calls.lookup ?? 0;
    }
    console.log(`remote chunk store requests, 64 MiB blob: ${JSON.stringify(figures)}`);
  });
});

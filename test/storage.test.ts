import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { appendFileSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import binding from 'zstd-napi/binding.js';
import { checksummedFrame, ChunkCodec, CHUNK_HEADER_SIZE, ENCODING_RAW, ENCODING_ZSTD } from '../storage/chunks/chunk-codec.js';
import { ChunkIndex, ChunkIndexBuilder } from '../storage/blobs/chunk-index.js';
import { LocalChunkStore } from '../storage/chunks/local-chunk-store.js';
import { ingestBlob } from '../storage/blobs/blob-ingest.js';
import { readBlob } from '../storage/blobs/blob-reader.js';
import { Metadata } from '../storage/meta/metadata.js';
import { parseDigest, sha256 } from '../storage/digest.js';
import { ChunkCorruptError, ChunkMissingError, SnapyardError } from '../storage/errors.js';
import { DEFAULT_FASTCDC } from '../storage/blobs/fastcdc.js';
import { tempDirs } from './helpers/tmp.js';
import { prng } from './helpers/oci.js';

const tmp = tempDirs('snapyard-st-');

async function* pieces(buf: Buffer, size = 100_000): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.byteLength; i += size) yield buf.subarray(i, i + size);
}

describe('digest', () => {
  test('accepts sha256 and rejects everything else with DIGEST_INVALID', () => {
    expect(parseDigest(sha256(Buffer.from('x')))).toMatch(/^sha256:[a-f0-9]{64}$/);
    for (const bad of ['sha256:abc', 'sha512:' + 'a'.repeat(128), 'SHA256:' + 'a'.repeat(64), '', 'sha256:' + 'g'.repeat(64)]) {
      expect(() => parseDigest(bad)).toThrow(SnapyardError);
    }
  });
});

describe('chunk codec', () => {
  const codec = new ChunkCodec(3);
  test('compressible and random data are zstd frames with a content checksum; both decode verified', () => {
    const text = Buffer.from('hello snapyard '.repeat(5000));
    const z = codec.encode(text);
    expect(z[4]).toBe(ENCODING_ZSTD);
    expect(z.byteLength).toBeLessThan(text.byteLength / 10);
    expect(checksummedFrame(z.subarray(CHUNK_HEADER_SIZE))).toBe(true);
    expect(codec.decode(z, sha256(text)).equals(text)).toBe(true);
    // Incompressible: a frame of raw blocks, a few bytes over the data, so that it carries the checksum too.
    const rnd = prng(65536, 3);
    const r = codec.encode(rnd);
    expect(r[4]).toBe(ENCODING_ZSTD);
    expect(r.byteLength).toBeGreaterThan(rnd.byteLength + CHUNK_HEADER_SIZE);
    expect(r.byteLength).toBeLessThanOrEqual(rnd.byteLength + CHUNK_HEADER_SIZE + 64);
    expect(checksummedFrame(r.subarray(CHUNK_HEADER_SIZE))).toBe(true);
    expect(codec.decode(r, sha256(rnd)).equals(rnd)).toBe(true);
    // The raw encoding (older stores) still decodes, verified.
    const plain = Buffer.concat([Buffer.from([0x53, 0x59, 0x43, 0x31, ENCODING_RAW, 0, 0, 0]), Buffer.alloc(4), rnd]);
    plain.writeUInt32LE(rnd.byteLength, 8);
    expect(codec.decode(plain, sha256(rnd)).equals(rnd)).toBe(true);
    expect(new ChunkCodec(3, 'checksum').decodeRead(plain, sha256(rnd)).equals(rnd)).toBe(true);
  });
  test("reads with the 'checksum' check: a flipped bit is caught by the frame's checksum, frames without one by sha256", () => {
    const reads = new ChunkCodec(1, 'checksum');
    // A frame written before the checksum (ZSTD_compressCCtx, no checksum flag) of random data: raw blocks, no checksum.
    const rnd = prng(40_000, 9);
    const old = Buffer.alloc(CHUNK_HEADER_SIZE + binding.compressBound(rnd.byteLength));
    const n = new binding.CCtx().compress(old.subarray(CHUNK_HEADER_SIZE), rnd, 1);
    old.writeUInt32LE(0x31435953, 0);
    old.writeUInt32LE(ENCODING_ZSTD, 4);
    old.writeUInt32LE(rnd.byteLength, 8);
    const oldForm = old.subarray(0, CHUNK_HEADER_SIZE + n);
    expect(checksummedFrame(oldForm.subarray(CHUNK_HEADER_SIZE))).toBe(false);
    for (const [name, raw, good] of [
      ['text', Buffer.from('abc'.repeat(10000)), undefined],
      ['random', rnd, undefined],
      ['old frame', rnd, oldForm],
    ] as Array<[string, Buffer, Buffer | undefined]>) {
      const stored = good ?? reads.encode(raw);
      expect(reads.decodeRead(stored, sha256(raw)).equals(raw), name).toBe(true);
      // Every 97th byte, the frame header's checksum flag, and the last byte (the checksum itself, where there is one).
      const flips: Array<[number, number]> = [[CHUNK_HEADER_SIZE + 4, 0x04], [stored.byteLength - 1, 0x10]];
      for (let at = 0; at < stored.byteLength; at += 97) flips.push([at, 0x10]);
      for (const [at, bit] of flips) {
        const bad = Buffer.from(stored);
        bad.writeUInt8(bad.readUInt8(at) ^ bit, at);
        expect(() => reads.decodeRead(bad, sha256(raw)), `${name}, byte ${at}`).toThrow(ChunkCorruptError);
      }
    }
    // The checksum vouches for the bytes, not for the name (a record's header names its chunk: pack-files.ts);
    // the 'digest' check and decode() verify the name as well.
    const text = Buffer.from('abc'.repeat(10000));
    const z = reads.encode(text);
    expect(reads.decodeRead(z, sha256(Buffer.from('other'))).equals(text)).toBe(true);
    expect(() => new ChunkCodec(1, 'digest').decodeRead(z, sha256(Buffer.from('other')))).toThrow(ChunkCorruptError);
    expect(() => reads.decode(z, sha256(Buffer.from('other')))).toThrow(ChunkCorruptError);
  });
  test('a flipped bit, a bad header or a wrong name is ChunkCorruptError', () => {
    const text = Buffer.from('abc'.repeat(10000));
    const good = codec.encode(text);
    for (let at = 0; at < good.byteLength; at += 7) {
      const bad = Buffer.from(good);
      bad.writeUInt8(bad.readUInt8(at) ^ 0x10, at);
      expect(() => codec.decode(bad, sha256(text))).toThrow(ChunkCorruptError);
    }
    expect(() => codec.decode(good, sha256(Buffer.from('other')))).toThrow(ChunkCorruptError);
    expect(() => codec.decode(Buffer.alloc(3), sha256(text))).toThrow(ChunkCorruptError);
  });
});

describe('chunk index', () => {
  test('encodes and decodes, and finds the chunk holding any offset', () => {
    const b = new ChunkIndexBuilder(DEFAULT_FASTCDC);
    const lengths = [100, 20000, 1, 65536, 300];
    lengths.forEach((l, i) => b.push(sha256(Buffer.from([i])), l));
    const size = lengths.reduce((a, c) => a + c, 0);
    const idx = b.build(sha256(Buffer.from('blob')), size);
    const back = ChunkIndex.decode(idx.encode());
    expect(back.count).toBe(5);
    expect(back.size).toBe(size);
    expect(back.params).toEqual(DEFAULT_FASTCDC);
    expect([...back.entries()]).toEqual([...idx.entries()]);
    expect(back.chunkAt(0)).toBe(0);
    expect(back.chunkAt(99)).toBe(0);
    expect(back.chunkAt(100)).toBe(1);
    expect(back.chunkAt(20100)).toBe(2);
    expect(back.chunkAt(20101)).toBe(3);
    expect(back.chunkAt(size - 1)).toBe(4);
  });
  test('truncated, inconsistent or foreign bytes are INDEX_INVALID', () => {
    const b = new ChunkIndexBuilder(DEFAULT_FASTCDC);
    b.push(sha256(Buffer.from('a')), 10);
    const enc = b.build(sha256(Buffer.from('blob')), 10).encode();
    expect(() => ChunkIndex.decode(enc.subarray(0, enc.length - 1))).toThrow(/INDEX|chunk index/);
    const wrongSize = Buffer.from(enc);
    wrongSize.writeBigUInt64LE(11n, 24);
    expect(() => ChunkIndex.decode(wrongSize)).toThrow(SnapyardError);
    const huge = Buffer.from(enc);
    huge.writeUInt32LE(0xffffffff, 64);
    expect(() => ChunkIndex.decode(huge)).toThrow(SnapyardError);
    expect(() => ChunkIndex.decode(Buffer.from('not an index at all, not at all, not at all, not at all, not at all.'))).toThrow(SnapyardError);
  });
});

describe('local chunk store', () => {
  let store: LocalChunkStore;
  let root: string;
  beforeAll(() => {
    root = tmp();
    store = new LocalChunkStore({ root, workers: 1 });
  });
  afterAll(async () => { await store.close(); });

  test('add is idempotent and content-addressed; get returns verified bytes', async () => {
    const data = prng(70_000, 5);
    const a = await store.add(data);
    expect(a.digest).toBe(sha256(data));
    expect(a.written).toBe(true);
    const b = await store.add(data);
    expect(b.written).toBe(false);
    expect(await store.has(a.digest)).toBe(true);
    expect((await store.get(a.digest)).equals(data)).toBe(true);
    await store.flush();
    expect(store.statsNow().chunks).toBe(1);
  });

  test('concurrent adds of the same new chunk store it once', async () => {
    const data = prng(50_000, 55);
    const rs = await Promise.all([1, 2, 3, 4].map(() => store.add(data)));
    expect(rs.filter((r) => r.written)).toHaveLength(1);
    expect((await store.get(sha256(data))).equals(data)).toBe(true);
  });

  test('put refuses bytes that do not match the name', async () => {
    const data = prng(1000, 6);
    await expect(store.put(sha256(Buffer.from('x')), data)).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    expect(await store.has(sha256(Buffer.from('x')))).toBe(false);
    expect((await store.put(sha256(data), data)).digest).toBe(sha256(data));
  });

  test.each([
    ['compressible', Buffer.from('compressible chunk '.repeat(3000))],
    ['incompressible', prng(30_000, 58)],
  ])('missing and corrupt chunks are told apart; a flipped bit anywhere in a record (%s) is caught', async (_name, data) => {
    const missing = sha256(Buffer.from('never stored'));
    await expect(store.get(missing)).rejects.toBeInstanceOf(ChunkMissingError);
    const { digest } = await store.add(data);
    await store.flush();
    const at = store.where(digest)!;
    const clean = readFileSync(at.path);
    for (let i = at.offset - 40; i < at.offset + at.length; i += Math.max(1, Math.floor(at.length / 25))) {
      const bad = Buffer.from(clean);
      bad.writeUInt8(bad.readUInt8(i) ^ 0x04, i);
      writeFileSync(at.path, bad);
      await expect(store.get(digest), `byte ${i - at.offset}`).rejects.toBeInstanceOf(ChunkCorruptError);
      await expect(store.getConcat([digest], [data.byteLength]), `byte ${i - at.offset}, getConcat`).rejects.toBeInstanceOf(ChunkCorruptError);
    }
    writeFileSync(at.path, clean);
    expect((await store.get(digest)).equals(data)).toBe(true);
  });

  test('a torn record at the end of a pack (crash mid-append) harms nothing', async () => {
    const data = prng(30_000, 56);
    const { digest } = await store.add(data);
    await store.flush();
    const at = store.where(digest)!;
    appendFileSync(at.path, Buffer.from('SYR1 torn record without the rest'));
    await store.close();
    store = new LocalChunkStore({ root, workers: 1 });
    expect((await store.get(digest)).equals(data)).toBe(true);
    const next = prng(40_000, 57);
    const r = await store.add(next);
    expect((await store.get(r.digest)).equals(next)).toBe(true);
    expect(statSync(at.path).size).toBeGreaterThan(at.offset + at.length);
  });

  test('list enumerates chunks; remove forgets one', async () => {
    const { digest } = await store.add(Buffer.from('listed chunk'));
    const all = [];
    for await (const c of store.list()) all.push(c.digest);
    expect(all).toContain(digest);
    await store.remove(digest);
    expect(await store.has(digest)).toBe(false);
    await expect(store.get(digest)).rejects.toBeInstanceOf(ChunkMissingError);
  });

  test('works inline without worker threads, and re-opens with everything in place', async () => {
    const r2 = tmp();
    const inline = new LocalChunkStore({ root: r2, workers: 0 });
    const items = [prng(20_000, 58), Buffer.from('z'.repeat(100_000)), Buffer.alloc(0)];
    const ds: string[] = [];
    for (const it of items) ds.push((await inline.add(it)).digest);
    await inline.close();
    const again = new LocalChunkStore({ root: r2, workers: 2 });
    for (let i = 0; i < items.length; i++) expect((await again.get(ds[i]! as `sha256:${string}`)).equals(items[i]!)).toBe(true);
    expect(readdirSync(join(r2, 'packs')).length).toBe(1);
    await again.close();
  });
});

describe('blob ingest and read', () => {
  let store: LocalChunkStore;
  beforeAll(() => { store = new LocalChunkStore({ root: tmp(), workers: 2 }); });
  afterAll(async () => { await store.close(); });

  test('round-trips byte-exact whatever the piece sizes, ranges included', async () => {
    const data = Buffer.concat([prng(1_500_000, 8), Buffer.alloc(400_000), Buffer.from('tail'.repeat(30000))]);
    const r = await ingestBlob(store, pieces(data, 77_777));
    expect(r.digest).toBe(sha256(data));
    expect(r.size).toBe(data.byteLength);
    const all: Buffer[] = [];
    for await (const p of readBlob(store, r.index)) all.push(p);
    expect(Buffer.concat(all).equals(data)).toBe(true);
    for (const [a, b] of [[0, 1], [65535, 65537], [1_000_000, 1_900_000], [data.byteLength - 3, data.byteLength]] as const) {
      const part: Buffer[] = [];
      for await (const p of readBlob(store, r.index, a, b)) part.push(p);
      expect(Buffer.concat(part).equals(data.subarray(a, b))).toBe(true);
    }
    const idx = ChunkIndex.decode(await store.get(r.indexDigest));
    expect(idx.count).toBe(r.chunks);
  });

  test('blobs that share content share chunks: the second stores only what is new', async () => {
    const common = prng(3_000_000, 9);
    const a = Buffer.concat([common, prng(200_000, 10)]);
    const b = Buffer.concat([prng(100_000, 11), common]);
    const ra = await ingestBlob(store, pieces(a));
    const rb = await ingestBlob(store, pieces(b));
    expect(rb.newChunks).toBeLessThan(rb.chunks / 3);
    expect(rb.newStoredBytes).toBeLessThan(b.byteLength / 5);
    const sa = new Set([...ra.index.lists()[0]!.entries()].map((e) => e.digest));
    const shared = [...rb.index.lists()[0]!.entries()].filter((e) => sa.has(e.digest)).reduce((n, e) => n + e.length, 0);
    expect(shared).toBeGreaterThan(common.byteLength * 0.9);
  });

  test('a digest mismatch is DIGEST_INVALID and no index is produced', async () => {
    const data = prng(200_000, 12);
    await expect(ingestBlob(store, pieces(data), { expectDigest: sha256(Buffer.from('other')) })).rejects.toMatchObject({ code: 'DIGEST_INVALID' });
    await expect(ingestBlob(store, pieces(data), { expectSize: 10 })).rejects.toMatchObject({ code: 'SIZE_INVALID' });
  });

  test('the same ingest works on a store without worker threads', async () => {
    const inline = new LocalChunkStore({ root: tmp(), workers: 0 });
    const data = Buffer.concat([prng(700_000, 13), Buffer.alloc(300_000, 7)]);
    const r = await ingestBlob(inline, pieces(data, 33_333));
    expect(r.digest).toBe(sha256(data));
    const back: Buffer[] = [];
    for await (const p of readBlob(inline, r.index, 5, data.byteLength - 5)) back.push(p);
    expect(Buffer.concat(back).equals(data.subarray(5, data.byteLength - 5))).toBe(true);
    await inline.close();
  });

  test('an empty blob has an empty index', async () => {
    const r = await ingestBlob(store, pieces(Buffer.alloc(0)));
    expect(r.size).toBe(0);
    expect(r.chunks).toBe(0);
    expect(r.digest).toBe(sha256(Buffer.alloc(0)));
  });
});

describe('metadata', () => {
  test('schema is versioned and re-opening keeps data', () => {
    const path = join(tmp(), 'meta.db');
    const m = new Metadata(path);
    const d = sha256(Buffer.from('b'));
    m.commitBlob('r', { digest: d, size: 1, indexDigest: d });
    m.close();
    const m2 = new Metadata(path);
    expect(m2.getBlob(d)?.size).toBe(1);
    expect(m2.isLinked('r', d)).toBe(true);
    m2.close();
  });

  test('a manifest with missing references is not committed, and nothing else changes', () => {
    const m = new Metadata(':memory:');
    const d = sha256(Buffer.from('m'));
    const blob = sha256(Buffer.from('b'));
    const r = m.commitManifest({ repo: 'r', digest: d, mediaType: 'x', artifactType: null, subject: null, annotations: null, content: Buffer.from('{}'), refs: [{ digest: blob, kind: 'blob' }], tag: 't' }, 'test');
    expect(r.missing).toHaveLength(1);
    expect(m.getManifest('r', d)).toBeNull();
    expect(m.resolveTag('r', 't')).toBeNull();
    expect(m.tagHistory('r', 't')).toEqual([]);
    m.close();
  });
});

describe('blob commit', () => {
  test('a blob of 8192+ chunks commits; one whose chunk is gone (in a middle check batch) is refused with CHUNK_MISSING naming it, and nothing is recorded', async () => {
    const { openStore } = await import('../storage/open-store.js');
    const { digestFromRaw } = await import('../storage/digest.js');
    const store = await openStore({ dataDir: tmp(), workers: 0, params: { minSize: 64, avgSize: 256, maxSize: 1024 } });
    try {
      const source = async function* (b: Buffer) {
        yield b;
      };
      const ok = await store.blobs.ingestUncommitted(source(prng(3_000_000, 71)));
      expect(ok.chunks).toBeGreaterThan(8192);
      await store.blobs.commit('r', ok);
      expect(await store.meta.getBlob(ok.digest)).not.toBeNull();

      const bad = await store.blobs.ingestUncommitted(source(prng(3_000_000, 72)));
      const list = bad.index.lists()[0]!;
      const gone = digestFromRaw(list.rawDigestAt(Math.floor(list.count / 2)));
      await store.chunks.remove(gone);
      await expect(store.blobs.commit('r', bad)).rejects.toMatchObject({ code: 'CHUNK_MISSING', message: expect.stringContaining(gone) });
      expect(await store.meta.getBlob(bad.digest)).toBeNull();
    } finally {
      await store.close();
    }
  }, 60_000);
});

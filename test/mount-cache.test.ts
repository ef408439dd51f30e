/**
 * A lazy mount's reads from the node cache (client/lazy/cached-chunks.ts)
 * over a real LocalChunkStore with its worker threads, and the memory it
 * keeps: recent chunks within a byte budget, reply buffers for reuse
 * (client/lazy/buffer-pool.ts).
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { LocalChunkStore } from '../storage/chunks/local-chunk-store.js';
import { hexOf } from '../storage/digest.js';
import { BufferPool } from '../client/lazy/buffer-pool.js';
import { GROUP_BYTES, HERE_BYTES, readCached, RecentChunks } from '../client/lazy/cached-chunks.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-mount-cache-');
const KiB = 1024;

/** Chunks of 16..256 KiB, half of them compressible (zstd-encoded in the store), half random (stored raw). */
function someChunks(n: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => {
    const len = (16 + ((i * 37) % 241)) * KiB;
    return i % 2 === 0 ? Buffer.alloc(len, `chunk ${i} `) : randomBytes(len);
  });
}

async function storeWith(chunks: Buffer[]): Promise<{ store: LocalChunkStore; hexes: string[] }> {
  const store = new LocalChunkStore({ root: join(tmp(), 'chunks'), workers: 2 });
  const hexes: string[] = [];
  for (const c of chunks) hexes.push(hexOf((await store.add(c)).digest));
  await store.flush();
  return { store, hexes };
}

/** Flips one byte in the middle of a chunk's stored bytes on disk. */
function corruptRecord(store: LocalChunkStore, hex: string): void {
  const w = store.where(`sha256:${hex}`)!;
  const fd = openSync(w.path, 'r+');
  try {
    const b = Buffer.alloc(1);
    const at = w.offset + Math.floor(w.length / 2);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

describe('lazy mount: reads from the node cache', () => {
  test('readCached returns every held chunk byte-exact (groups of about 2 MiB over the workers) and names the ones the cache lacks', async () => {
    const chunks = someChunks(60);
    const { store, hexes } = await storeWith(chunks.slice(0, 50));
    try {
      const absent = chunks.slice(50).map((c) => ({ hex: hexOf(`sha256:${randomBytes(32).toString('hex')}`), length: c.byteLength }));
      const wants = [...hexes.map((hex, i) => ({ hex, length: chunks[i]!.byteLength })), ...absent];
      expect(chunks.slice(0, 50).reduce((n, c) => n + c.byteLength, 0)).toBeGreaterThan(2 * GROUP_BYTES); // several groups
      const batch = await readCached(store, wants);
      try {
        expect(batch.missing.map((w) => w.hex).sort()).toEqual(absent.map((w) => w.hex).sort());
        expect(batch.corrupt).toBe(0);
        hexes.forEach((hex, i) => expect(batch.got.get(hex)?.equals(chunks[i]!)).toBe(true));
      } finally {
        batch.release();
      }
      expect(batch.got.size).toBe(0); // released: the views are gone
    } finally {
      await store.close();
    }
  });

  test('a chunk corrupted on disk is never returned: it is counted, moved aside (the cache no longer claims it) and reported missing; the rest of its group is still served', async () => {
    const chunks = someChunks(20);
    const { store, hexes } = await storeWith(chunks);
    try {
      const bad = hexes[4]!; // compressible: a flipped byte breaks the zstd frame or the hash
      const bad2 = hexes[7]!; // random: stored raw, only the hash can tell
      corruptRecord(store, bad);
      corruptRecord(store, bad2);
      const wants = hexes.map((hex, i) => ({ hex, length: chunks[i]!.byteLength }));
      const batch = await readCached(store, wants);
      try {
        expect(batch.corrupt).toBe(2);
        expect(batch.missing.map((w) => w.hex).sort()).toEqual([bad, bad2].sort());
        expect(batch.got.has(bad) || batch.got.has(bad2)).toBe(false);
        hexes.forEach((hex, i) => hex !== bad && hex !== bad2 && expect(batch.got.get(hex)?.equals(chunks[i]!)).toBe(true));
      } finally {
        batch.release();
      }
      expect(await store.has(`sha256:${bad}`)).toBe(false);
      expect(await store.has(`sha256:${bad2}`)).toBe(false);
      const q = join(store.root, 'quarantine');
      expect(existsSync(q) && readdirSync(q).length).toBe(2);
      // Stored again (as a fetch would), it reads back.
      await store.add(chunks[4]!);
      await store.flush();
      const again = await readCached(store, [{ hex: bad, length: chunks[4]!.byteLength }]);
      expect(again.got.get(bad)?.equals(chunks[4]!)).toBe(true);
      again.release();
    } finally {
      await store.close();
    }
  });

  test('a read of at most HERE_BYTES is decoded on the calling thread, with the same checks: a corrupt chunk is moved aside, the others served', async () => {
    const chunks = someChunks(6).map((c) => c.subarray(0, 20 * KiB));
    const { store, hexes } = await storeWith(chunks);
    try {
      expect(chunks.reduce((n, c) => n + c.byteLength, 0)).toBeLessThanOrEqual(HERE_BYTES);
      corruptRecord(store, hexes[3]!);
      const batch = await readCached(store, hexes.map((hex, i) => ({ hex, length: chunks[i]!.byteLength })));
      expect(batch.corrupt).toBe(1);
      expect(batch.missing.map((w) => w.hex)).toEqual([hexes[3]]);
      hexes.forEach((hex, i) => i !== 3 && expect(batch.got.get(hex)?.equals(chunks[i]!)).toBe(true));
      batch.release();
      expect(await store.has(`sha256:${hexes[3]}`)).toBe(false);
    } finally {
      await store.close();
    }
  });

  test('RecentChunks never holds more than its byte budget, drops the least recently used first, keeps copies and recycles the dropped ones', () => {
    const r = new RecentChunks(200 * KiB);
    const c = (i: number, len = 64 * KiB) => Buffer.alloc(len, i);
    /** The whole chunk as held (copied out), or undefined. */
    const get = (hex: string, len = 64 * KiB) => {
      const out = Buffer.alloc(len);
      return r.copyOut(hex, 0, len, out, 0) ? out : undefined;
    };
    const src = c(1);
    r.put('a', src);
    r.put('b', c(2));
    r.put('c', c(3));
    expect(r.bytes).toBe(192 * KiB);
    src.fill(9); // the caller's buffer is reused: what was kept does not change
    expect(get('a')?.equals(c(1))).toBe(true); // and 'a' is now the most recent
    // A piece of a chunk lands where it is asked to.
    const part = Buffer.alloc(10, 0xee);
    expect(r.copyOut('c', 100, 104, part, 3)).toBe(true);
    expect([...part]).toEqual([0xee, 0xee, 0xee, 3, 3, 3, 3, 0xee, 0xee, 0xee]);
    expect(r.copyOut('nope', 0, 4, part, 0)).toBe(false);
    r.put('d', c(4)); // over budget: the least recently used ('b') goes
    expect(r.bytes).toBeLessThanOrEqual(200 * KiB);
    expect(r.has('b')).toBe(false);
    expect(get('a')?.equals(c(1))).toBe(true);
    expect(get('c')?.equals(c(3))).toBe(true);
    expect(get('d')?.equals(c(4))).toBe(true);
    r.put('big', c(5, 256 * KiB)); // larger than the whole budget: not kept, nothing dropped for it
    expect(r.has('big')).toBe(false);
    expect(r.bytes).toBe(192 * KiB);
    for (let i = 0; i < 100; i++) {
      const len = (1 + (i % 7)) * 10 * KiB;
      r.put(`x${i}`, c(i, len));
      expect(r.bytes).toBeLessThanOrEqual(200 * KiB);
      expect(get(`x${i}`, len)?.equals(c(i, len))).toBe(true);
    }
    // Everything still held is what was put under its name (recycled memory never shows another chunk's bytes).
    for (let i = 0; i < 100; i++) {
      const len = (1 + (i % 7)) * 10 * KiB;
      const got = get(`x${i}`, len);
      if (got) expect(got.equals(c(i, len))).toBe(true);
    }
  });

  test('BufferPool reuses what it is given back, within its byte budget, and ignores buffers it did not make', () => {
    const pool = new BufferPool(1024 * KiB);
    const a = pool.take(100 * KiB); // 128 KiB class
    expect(a.byteLength).toBe(100 * KiB);
    pool.give(a);
    expect(pool.bytes).toBe(128 * KiB);
    const b = pool.take(120 * KiB);
    expect(b.buffer).toBe(a.buffer); // the same memory again
    expect(pool.bytes).toBe(0);
    pool.give(Buffer.alloc(128 * KiB)); // not the pool's
    expect(pool.bytes).toBe(0);
    const big = [pool.take(600 * KiB), pool.take(600 * KiB)]; // 1 MiB class each
    big.forEach((x) => pool.give(x));
    expect(pool.bytes).toBe(1024 * KiB); // the second one was over the budget: dropped
    pool.give(b);
    expect(pool.bytes).toBe(1024 * KiB);
  });
});

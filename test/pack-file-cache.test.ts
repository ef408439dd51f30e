/**
 * The local pack cache's kept reads (pack-file-cache.ts, kept-ranges.ts):
 * ranges read with ReadHint.keep are served from the local disk afterwards
 * (no request to the driver behind it), a read they cover only in part goes
 * to the driver, the byte budget drops the least recently used pack, a
 * deleted pack's ranges are gone, and what is served is byte-exact.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { KeptRanges } from '../storage/chunks/kept-ranges.js';
import { LocalPackDriver } from '../storage/chunks/local-pack-driver.js';
import { PackFileCache } from '../storage/chunks/pack-file-cache.js';
import { tempDirs } from './helpers/tmp.js';

const newDir = tempDirs('snapyard-packcache-');

/** A driver (local pack files) holding packs a, b, c of 1 MiB random bytes each, and a pack cache in front of it that keeps no whole packs. */
async function setUp(keptBytes: number) {
  const inner = new LocalPackDriver({ dir: join(newDir(), 'packs'), openFiles: 4 });
  const files = newDir();
  const bytes: Record<string, Buffer> = {};
  for (const name of ['a', 'b', 'c']) {
    bytes[name] = randomBytes(1024 * 1024);
    writeFileSync(join(files, name), bytes[name]);
    await inner.put(name, join(files, name));
  }
  const dir = join(newDir(), 'pack-cache');
  const cache = new PackFileCache(inner, dir, 0, keptBytes);
  return { inner, cache, bytes, dir };
}

/** Kept ranges are written off the event loop: waits (up to 2 s) until `f` holds. */
async function waitUntil(f: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(f()).toBe(true);
}

describe('pack cache: kept reads', () => {
  test('a kept range is read from the local disk after; a range it covers in part, and reads not kept, go to the driver', async () => {
    const { inner, cache, bytes } = await setUp(64 * 1024 * 1024);
    const gets = () => inner.stats().gets;
    expect(await cache.get('a', 1000, 5000, { keep: true })).toEqual(bytes.a!.subarray(1000, 6000));
    await waitUntil(() => cache.holds('a', 1000, 5000));
    const before = gets();
    // Inside the kept range: no request behind the cache, byte-exact.
    expect(await cache.get('a', 2000, 1000)).toEqual(bytes.a!.subarray(2000, 3000));
    expect(await cache.get('a', 1000, 5000, { keep: true })).toEqual(bytes.a!.subarray(1000, 6000));
    expect(gets()).toBe(before);
    // Running past it: from the driver.
    expect(await cache.get('a', 5000, 2000)).toEqual(bytes.a!.subarray(5000, 7000));
    expect(gets()).toBe(before + 1);
    // Not asked to keep: not kept.
    await cache.get('b', 0, 4096);
    await new Promise((r) => setTimeout(r, 50));
    expect(cache.holds('b', 0, 4096)).toBe(false);
    // Touching and overlapping ranges merge: [1000, 6000) + [6000, 9000) + [500, 1500) cover [500, 9000).
    await cache.get('a', 6000, 3000, { keep: true });
    await cache.get('a', 500, 1000, { keep: true });
    await waitUntil(() => cache.holds('a', 500, 8500));
    const n = gets();
    expect(await cache.get('a', 500, 8500)).toEqual(bytes.a!.subarray(500, 9000));
    expect(gets()).toBe(n);
    await cache.close();
  });

  test('the byte budget drops the least recently used pack; a deleted pack is not served from its kept ranges', async () => {
    const { inner, cache, bytes, dir } = await setUp(1000 * 1024);
    await cache.get('a', 0, 100 * 1024, { keep: true });
    await waitUntil(() => cache.holds('a', 0, 100 * 1024));
    await cache.get('b', 0, 100 * 1024, { keep: true });
    await waitUntil(() => cache.holds('b', 0, 100 * 1024));
    // a is used again: b is now the oldest.
    await cache.get('a', 0, 1024);
    for (let i = 0; i < 3; i++) await cache.get('c', i * 240 * 1024, 240 * 1024, { keep: true });
    await waitUntil(() => cache.holds('c', 0, 720 * 1024));
    expect(cache.holds('b', 0, 100 * 1024)).toBe(true); // 920 KiB held
    await cache.get('c', 800 * 1024, 100 * 1024, { keep: true });
    await waitUntil(() => cache.holds('c', 800 * 1024, 100 * 1024));
    expect(cache.holds('b', 0, 1)).toBe(false);
    expect(cache.holds('a', 0, 100 * 1024)).toBe(true);
    await waitUntil(() => !existsSync(join(dir, 'b.part')));
    // A range above a quarter of the budget is not kept at all.
    await cache.get('b', 0, 300 * 1024, { keep: true });
    await new Promise((r) => setTimeout(r, 50));
    expect(cache.holds('b', 0, 1)).toBe(false);
    // Deleted (and put again with other bytes): the old kept range is not served.
    await cache.delete(['a']);
    expect(cache.holds('a', 0, 1)).toBe(false);
    const files = newDir();
    const other = randomBytes(1024 * 1024);
    writeFileSync(join(files, 'a'), other);
    await inner.put('a', join(files, 'a'));
    expect(await cache.get('a', 0, 1024, { keep: true })).toEqual(other.subarray(0, 1024));
    expect(bytes.a!.subarray(0, 1024).equals(other.subarray(0, 1024))).toBe(false);
    await cache.close();
    await waitUntil(() => readdirSync(dir).length === 0);
  });

  test('ranges: merged when they overlap or touch, kept apart otherwise, counted once', () => {
    const dropped: string[] = [];
    const k = new KeptRanges(1000, (n) => dropped.push(n));
    k.add('p', 100, 200);
    k.add('p', 300, 400);
    expect(k.heldBytes).toBe(200);
    expect(k.has('p', 150, 350)).toBe(false);
    k.add('p', 200, 300);
    expect(k.has('p', 100, 400)).toBe(true);
    expect(k.heldBytes).toBe(300);
    k.add('p', 50, 450);
    expect(k.heldBytes).toBe(400);
    k.add('p', 600, 700);
    k.add('p', 0, 10);
    expect(k.has('p', 0, 10) && k.has('p', 50, 450) && k.has('p', 600, 700)).toBe(true);
    expect(k.has('p', 5, 60)).toBe(false);
    expect(k.heldBytes).toBe(510);
    k.add('q', 0, 600);
    expect(dropped).toEqual(['p']);
    expect(k.heldBytes).toBe(600);
  });
});

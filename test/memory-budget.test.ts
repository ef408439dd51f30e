/**
 * One memory budget for the caches (storage/memory-budget.ts): entries of
 * every cache share one least-recently-used order and the total never passes
 * the budget; then a real server with a small --cache-memory whose caches
 * stay within it through delta pulls (metrics), and still answer right.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MemoryBudget, ReadBudget } from '../storage/memory-budget.js';
import type { ChunkStore } from '../storage/chunks/chunk-store.js';
import { openStore } from '../storage/open-store.js';
import { readBlob } from '../storage/blobs/blob-reader.js';
import { randomBytes } from 'node:crypto';
import { cliOk } from './helpers/cli.js';
import { makeBaseImage, makeVariant } from './helpers/qcow2-fixtures.js';
import { spawnServe, type ServeProcess } from './helpers/serve-process.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-budget-');

describe('MemoryBudget', () => {
  test('caches share one LRU order: the entry used longest ago goes first, whichever cache holds it', () => {
    const budget = new MemoryBudget(100);
    const a = budget.cache<string, number>('a', (v) => v, { maxEntryBytes: 100 });
    const b = budget.cache<string, number>('b', (v) => v, { maxEntryBytes: 100 });
    a.set('a1', 30);
    b.set('b1', 30);
    a.set('a2', 30);
    expect(budget.usedBytes).toBe(90);
    expect(a.get('a1')).toBe(30); // a1 is now the most recent
    b.set('b2', 30); // over by 20: b1 (least recently used) goes
    expect(b.has('b1')).toBe(false);
    expect([a.has('a1'), a.has('a2'), b.has('b2')]).toEqual([true, true, true]);
    expect(budget.usedBytes).toBe(90);
    b.set('b3', 70); // a2, then a1 go (oldest first); b2 stays only if it fits
    expect(budget.usedBytes).toBeLessThanOrEqual(100);
    expect(a.size).toBe(0);
    expect(b.get('b3')).toBe(70);
    expect(budget.usage()).toEqual([
      { name: 'a', entries: 0, bytes: 0 },
      { name: 'b', entries: b.size, bytes: b.bytes },
    ]);
  });

  test('an entry larger than one may be is not kept; replacing an entry counts its new size; delete and clear give the bytes back', () => {
    const budget = new MemoryBudget(1000);
    const c = budget.cache<string, Buffer>('c', (v) => v.byteLength); // at most 1000 / 8 per entry
    c.set('big', Buffer.alloc(200));
    expect(c.has('big')).toBe(false);
    c.set('k', Buffer.alloc(100));
    c.set('k', Buffer.alloc(50));
    expect(c.bytes).toBe(50);
    expect(budget.usedBytes).toBe(50);
    c.set('j', Buffer.alloc(70));
    expect(c.delete('k')).toBe(true);
    expect(budget.usedBytes).toBe(70);
    c.clear();
    expect([c.size, c.bytes, budget.usedBytes]).toEqual([0, 0, 0]);
  });
});

describe('ReadBudget', () => {
  const MiB = 1024 * 1024;
  async function storeWithBlob(size: number) {
    const store = await openStore({ dataDir: tmp(), workers: 1 });
    const blob = randomBytes(size);
    const r = await store.blobs.ingest('budget/r', (async function* () {
      yield blob;
    })());
    const index = await store.blobs.index((await store.meta.getBlob(r.digest))!);
    return { store, blob, index };
  }

  test('concurrent blob reads share it: it is never passed, and every byte comes back, also from a reader stopped early', async () => {
    const { store, blob, index } = await storeWithBlob(24 * MiB);
    try {
      const budget = new ReadBudget(6 * MiB);
      let peak = 0;
      const read = async (stopAfter: number) => {
        const parts: Buffer[] = [];
        for await (const piece of readBlob(store.chunks, index, 0, index.size, { budget, batchBytes: MiB })) {
          peak = Math.max(peak, budget.inUse);
          parts.push(Buffer.from(piece));
          if (parts.length === stopAfter) break;
        }
        return Buffer.concat(parts);
      };
      const [a, b, c] = await Promise.all([read(Infinity), read(Infinity), read(3)]);
      expect(a.equals(blob)).toBe(true);
      expect(b.equals(blob)).toBe(true);
      expect(c.equals(blob.subarray(0, c.byteLength))).toBe(true);
      expect(peak).toBeGreaterThan(2 * MiB); // read-ahead took from it too
      expect(peak).toBeLessThanOrEqual(budget.limitBytes);
      expect(budget.inUse).toBe(0);
    } finally {
      await store.close();
    }
  });

  test('more readers than the budget has batches: the others wait their turn, batches being fetched stay within it, and each reader gets its exact bytes', async () => {
    const { store, blob, index } = await storeWithBlob(12 * MiB);
    try {
      const budget = new ReadBudget(4 * MiB);
      // Batches asked of the store and not yet read and decoded (part of what the budget bounds: until handed out).
      let inFlight = 0;
      let peakInFlight = 0;
      const counting: ChunkStore = Object.assign(Object.create(store.chunks) as ChunkStore, {
        getConcat: async (d: Parameters<ChunkStore['getConcat']>[0], l: number[]) => {
          peakInFlight = Math.max(peakInFlight, ++inFlight);
          try {
            return await store.chunks.getConcat(d, l);
          } finally {
            inFlight--;
          }
        },
      });
      let peakWaiting = 0;
      const read = async (from: number, to: number) => {
        const hash = createHash('sha256');
        for await (const piece of readBlob(counting, index, from, to, { budget, batchBytes: MiB })) {
          peakWaiting = Math.max(peakWaiting, budget.waiting);
          hash.update(piece);
          await new Promise((r) => setTimeout(r, 1)); // a consumer that takes its time (a socket)
        }
        return hash.digest('hex');
      };
      const ranges = Array.from({ length: 10 }, (_, i) => [i * 1000, blob.byteLength - i * 7777] as const);
      const got = await Promise.all(ranges.map(([from, to]) => read(from, to)));
      got.forEach((h, i) => expect(h).toBe(createHash('sha256').update(blob.subarray(ranges[i]![0], ranges[i]![1])).digest('hex')));
      expect(peakWaiting).toBeGreaterThan(0); // readers past the 4th waited
      expect(peakInFlight).toBeLessThanOrEqual(4); // 10 readers, never more than the budget's 4 batches fetched at once
      expect([budget.inUse, budget.waiting, inFlight]).toEqual([0, 0, 0]);
    } finally {
      await store.close();
    }
  });

  test('waiters are served first come, first served, and read-ahead never takes what a waiter needs', async () => {
    const budget = new ReadBudget(4);
    expect(await budget.take(3)).toBe(3);
    const order: string[] = [];
    const a = budget.take(2).then(() => order.push('a'));
    const b = budget.take(1).then(() => order.push('b'));
    expect(budget.tryTake(1)).toBe(false); // a waits: no read-ahead before it
    budget.give(3);
    await Promise.all([a, b]);
    expect(order).toEqual(['a', 'b']);
    expect(budget.inUse).toBe(3);
    expect(budget.tryTake(1, 1)).toBe(false); // would leave less than 1 free
    expect(budget.tryTake(1)).toBe(true);
    const all = budget.take(10); // more than the budget: the whole of it, once free
    budget.give(4);
    expect(await all).toBe(4);
  });
});

describe('snapyard serve --cache-memory', () => {
  let s: ServeProcess;
  const LIMIT = 3 * 1024 * 1024;
  beforeAll(async () => {
    s = await spawnServe(['--data', join(tmp(), 'data'), '--workers', '1', '--cache-memory', '3M']);
  }, 60_000);
  afterAll(async () => {
    await s?.stop();
  });

  test('the caches stay within the budget through pushes and delta pulls, and pulls stay byte-exact', async () => {
    const dir = tmp();
    const base = await makeBaseImage(dir, { scale: 0.25, sizeMiB: 32 });
    const v2 = await makeVariant(dir, base, 'v2');
    await cliOk(['push', 'budget/img:base', base, '--registry', s.url]);
    await cliOk(['push', 'budget/img:v2', v2, '--registry', s.url]);
    const out = join(dir, 'pulled.qcow2');
    const cache = join(dir, 'cache');
    await cliOk(['pull', 'budget/img:base', '-o', join(dir, 'b.qcow2'), '--cache', cache, '--registry', s.url]);
    await cliOk(['pull', 'budget/img:v2', '-o', out, '--cache', cache, '--registry', s.url]);
    const sum = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
    expect(sum(out)).toBe(sum(v2));
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const limit = Number(/^snapyard_cache_limit_bytes (\d+)/m.exec(text)?.[1]);
    expect(limit).toBe(LIMIT);
    const caches = [...text.matchAll(/^snapyard_cache_bytes\{cache="([^"]+)"\} (\d+)/gm)].map((m) => ({ name: m[1]!, bytes: Number(m[2]) }));
    expect(caches.map((c) => c.name).sort()).toEqual(['blob-indexes', 'chunk-sets', 'delta-plans', 'frames', 'frames-as-stored', 'index-bytes', 'index-diffs', 'resemblance-tables']);
    // The pull of v2 held base: the resemblance table of base's chunks is counted in the budget.
    expect(caches.find((c) => c.name === 'resemblance-tables')!.bytes).toBeGreaterThan(20_000);
    const total = caches.reduce((n, c) => n + c.bytes, 0);
    expect(total).toBeGreaterThan(0); // they were used
    expect(total).toBeLessThanOrEqual(LIMIT);
  });
});

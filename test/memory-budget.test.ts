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
import { MemoryBudget, ReadAheadBudget } from '../storage/memory-budget.js';
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

describe('ReadAheadBudget', () => {
  test('concurrent blob reads share it: read-ahead never passes it, and every byte comes back, also from a reader stopped early', async () => {
    const store = await openStore({ dataDir: tmp(), workers: 1 });
    try {
      const blob = randomBytes(24 * 1024 * 1024);
      const r = await store.blobs.ingest('budget/r', (async function* () {
        yield blob;
      })());
      const index = await store.blobs.index((await store.meta.getBlob(r.digest))!);
      const budget = new ReadAheadBudget(6 * 1024 * 1024);
      let peak = 0;
      const read = async (stopAfter: number) => {
        const parts: Buffer[] = [];
        for await (const piece of readBlob(store.chunks, index, 0, index.size, { budget, batchBytes: 1024 * 1024 })) {
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
      expect(peak).toBeGreaterThan(0); // read-ahead took from it
      expect(peak).toBeLessThanOrEqual(budget.limitBytes);
      expect(budget.inUse).toBe(0);
    } finally {
      await store.close();
    }
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
    expect(caches.map((c) => c.name).sort()).toEqual(['blob-indexes', 'chunk-sets', 'delta-plans', 'frames', 'frames-as-stored', 'index-bytes', 'index-diffs']);
    const total = caches.reduce((n, c) => n + c.bytes, 0);
    expect(total).toBeGreaterThan(0); // they were used
    expect(total).toBeLessThanOrEqual(LIMIT);
  });
});

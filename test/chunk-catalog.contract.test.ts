/**
 * One contract, every ChunkCatalog (issue 11): the same cases on SQLite (the
 * local store's index.db) and on PostgreSQL (a fresh schema of the run's
 * server). What only PostgreSQL has (replicas, round trips, the server
 * going away): chunk-catalog.postgres.test.ts.
 */
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import type { CatalogEntry } from '../storage/chunks/chunk-catalog.js';
import { PackIndex } from '../storage/chunks/pack-index.js';
import { SqliteChunkCatalog } from '../storage/chunks/sqlite-chunk-catalog.js';
import { digestFromRaw } from '../storage/digest.js';
import { CATALOGS, fill, hex, newDir, raw, raws, row, track } from './helpers/chunk-catalogs.js';

const T0 = 1_700_000_000_000;

describe.each(CATALOGS)('ChunkCatalog contract: $name', (impl) => {
  test('lookup of 5000 digests in one call: all held, all missing, mixed in any order', async () => {
    const c = await impl.open();
    const held = raws(0, 5000);
    const rows = held.map((r, i) => row(r, i, i % 2 ? 'pack-odd' : 'pack-even'));
    await fill(c, rows, T0);
    const expected = (i: number): CatalogEntry => ({ pack: rows[i]!.pack, offset: rows[i]!.offset, length: rows[i]!.length, rawLength: rows[i]!.rawLength, mtimeMs: T0 });
    const all = await c.lookup(held);
    expect(all).toHaveLength(5000);
    all.forEach((e, i) => expect(e, `row ${i}`).toEqual(expected(i)));
    expect((await c.lookup(raws(0, 5000, 'other'))).every((e) => e === null)).toBe(true);
    // Mixed: held and missing interleaved, a digest twice, positions kept.
    const asked = Array.from({ length: 5000 }, (_, i) => (i % 3 === 0 ? raw(i, 'other') : held[4999 - i]!));
    asked[10] = held[7]!;
    asked[11] = held[7]!;
    const mixed = await c.lookup(asked);
    mixed.forEach((e, i) => {
      if (i === 10 || i === 11) expect(e).toEqual(expected(7));
      else if (i % 3 === 0) expect(e, `position ${i}`).toBeNull();
      else expect(e, `position ${i}`).toEqual(expected(4999 - i));
    });
    expect(await c.lookup([])).toEqual([]);
  });

  test('commit: the first copy of a chunk keeps its place, a later copy refreshes its time; touches refresh, touches of chunks not held are answered absent', async () => {
    const c = await impl.open();
    const [a, b, x, y] = [raw(1), raw(2), raw(3), raw(4)];
    expect(await c.commit([row(a, 1, 'p1'), row(b, 2, 'p1')], [], T0)).toEqual({ absent: [] });
    // a again, from another writer's pack: stays at p1, time refreshed.
    expect(await c.commit([row(a, 9, 'p2'), row(x, 3, 'p2')], [], T0 + 10)).toEqual({ absent: [] });
    const [ea, eb, ex] = await c.lookup([a, b, x]);
    expect(ea).toEqual({ pack: 'p1', offset: 1000, length: 101, rawLength: 1001, mtimeMs: T0 + 10 });
    expect(eb!.mtimeMs).toBe(T0);
    expect(ex).toMatchObject({ pack: 'p2', offset: 3000, mtimeMs: T0 + 10 });
    // Touches: b refreshed; y never written -> absent (position 1); y added and touched in one call: held.
    const r = await c.commit([row(y, 4, 'p2')], [b, raw(99), y, b], T0 + 20);
    expect(r).toEqual({ absent: [1] });
    expect((await c.lookup([b, y])).map((e) => e!.mtimeMs)).toEqual([T0 + 20, T0 + 20]);
    // Only touches.
    expect(await c.commit([], [a, raw(98)], T0 + 30)).toEqual({ absent: [1] });
    expect((await c.lookup([a]))[0]!.mtimeMs).toBe(T0 + 30);
    expect(await c.commit([], [], T0 + 40)).toEqual({ absent: [] });
    expect((await c.stats()).chunks).toBe(4);
  });

  test('resolvePrefixes: for each prefix the one digest with it, null for none, ambiguous for several, in the order asked', async () => {
    const c = await impl.open();
    const d = (head: number[]) => Buffer.concat([Buffer.from(head), Buffer.alloc(32 - head.length, 0x5a)]);
    const [p, q, s] = [d([0xab, 0xcd, 0x01]), d([0xab, 0xcd, 0x02]), d([0xab, 0xce])];
    await c.commit([row(p, 0), row(q, 1), row(s, 2), row(d([0xff, 0xff, 0xff]), 3)], [], T0);
    const asked = [[0xab, 0xcd, 0x01], [0xab, 0xce], [0xab, 0xcd], [0xab], [0xab, 0xcc], [0xac], [0xff, 0xff, 0xff, 0xff]].map((h) => Buffer.from(h));
    const got = await c.resolvePrefixes([...asked, p, Buffer.from([0xab, 0xce])]);
    expect(got.map((x) => (x instanceof Uint8Array ? hex(x) : x))).toEqual([
      p.toString('hex'),
      s.toString('hex'),
      'ambiguous',
      'ambiguous',
      null,
      null,
      null, // past the last key
      p.toString('hex'), // a whole digest
      s.toString('hex'), // a prefix asked twice
    ]);
    expect(await c.resolvePrefixes([])).toEqual([]);
  });

  test('sweep over 20000 rows in batches of 1000: cutoff, keep and dryRun', async () => {
    const c = await impl.open(1000);
    const old = raws(0, 10000, 'old');
    const fresh = raws(0, 10000, 'fresh');
    await fill(c, old.map((r, i) => row(r, i)), T0);
    await fill(c, fresh.map((r, i) => row(r, i)), T0 + 5000);
    const kept = new Set(old.filter((_, i) => i % 3 === 0).map((r) => r.toString('hex')));
    const asked = new Set<string>();
    const keep = (r: Uint8Array) => {
      asked.add(Buffer.from(r).toString('hex'));
      return kept.has(Buffer.from(r).toString('hex'));
    };
    let expectedBytes = 0;
    old.forEach((_, i) => { if (i % 3 !== 0) expectedBytes += 100 + (i % 97); });
    const expected = { chunks: 10000 - kept.size, storedBytes: expectedBytes };
    const before = await c.stats();
    expect(await c.sweep(T0 + 1000, keep, true)).toEqual(expected);
    expect(asked.size).toBe(10000); // every old row asked, no fresh one
    expect(await c.stats()).toEqual(before);
    expect(await c.sweep(T0 + 1000, keep, false)).toEqual(expected);
    const left = await c.lookup([...old, ...fresh]);
    old.forEach((r, i) => expect(left[i] !== null, `old ${i}`).toBe(i % 3 === 0));
    expect(left.slice(10000).every((e) => e !== null)).toBe(true);
    expect((await c.stats()).chunks).toBe(20000 - expected.chunks);
    // Nothing older than the cutoff that keep rejects is left.
    expect(await c.sweep(T0 + 1000, keep, false)).toEqual({ chunks: 0, storedBytes: 0 });
  });

  test('packLive, inPack by offset, and move: only rows still at their old place move', async () => {
    const c = await impl.open();
    const rs = raws(0, 6);
    await c.commit([row(rs[0]!, 5, 'a'), row(rs[1]!, 2, 'a'), row(rs[2]!, 9, 'a'), row(rs[3]!, 0, 'b'), row(rs[4]!, 1, 'b')], [], T0);
    expect(await c.packLive()).toEqual(new Map([['a', { chunks: 3, storedBytes: 105 + 102 + 109 }], ['b', { chunks: 2, storedBytes: 201 }]]));
    const inA = await c.inPack('a');
    expect(inA.map((r) => [hex(r.raw), r.offset, r.length])).toEqual([[hex(rs[1]), 2000, 102], [hex(rs[0]), 5000, 105], [hex(rs[2]), 9000, 109]]);
    expect(await c.inPack('nowhere')).toEqual([]);
    const moved = await c.move([
      { raw: rs[0]!, from: { pack: 'a', offset: 5000 }, to: { pack: 'c', offset: 0 } },
      { raw: rs[1]!, from: { pack: 'a', offset: 1234 }, to: { pack: 'c', offset: 200 } }, // stale: not there any more
      { raw: rs[3]!, from: { pack: 'a', offset: 0 }, to: { pack: 'c', offset: 400 } }, // wrong pack
      { raw: rs[5]!, from: { pack: 'a', offset: 7 }, to: { pack: 'c', offset: 600 } }, // not held
    ]);
    expect(moved).toBe(1);
    const [e0, e1, e3] = await c.lookup([rs[0]!, rs[1]!, rs[3]!]);
    expect(e0).toMatchObject({ pack: 'c', offset: 0, length: 105 });
    expect(e1).toMatchObject({ pack: 'a', offset: 2000 });
    expect(e3).toMatchObject({ pack: 'b', offset: 0 });
    expect((await c.inPack('a')).map((r) => r.offset)).toEqual([2000, 9000]);
    expect((await c.packLive()).get('c')).toEqual({ chunks: 1, storedBytes: 105 });
    expect(await c.move([])).toBe(0);
  });

  test('all(): every row once, by digest, across pages', async () => {
    const c = await impl.open(1000);
    const rs = raws(0, 2500);
    await fill(c, rs.map((r, i) => row(r, i, `p${i % 4}`)), T0, 700);
    const at = new Map(rs.map((r, i) => [r.toString('hex'), i]));
    const seen: string[] = [];
    for await (const e of c.all()) {
      const i = at.get(Buffer.from(e.raw).toString('hex'))!;
      expect(e).toEqual({ raw: expect.anything(), pack: `p${i % 4}`, offset: i * 1000, length: 100 + (i % 97), rawLength: 1000 + (i % 13), mtimeMs: T0 });
      seen.push(Buffer.from(e.raw).toString('hex'));
    }
    expect(seen).toEqual(rs.map((r) => r.toString('hex')).sort());
  });

  test('remove and stats', async () => {
    const c = await impl.open();
    expect(await c.stats()).toEqual({ chunks: 0, storedBytes: 0, rawBytes: 0 });
    const rs = raws(0, 100);
    await fill(c, rs.map((r, i) => row(r, i)), T0);
    const sum = (f: (i: number) => number, idx: number[]) => idx.reduce((s, i) => s + f(i), 0);
    const all = rs.map((_, i) => i);
    expect(await c.stats()).toEqual({ chunks: 100, storedBytes: sum((i) => 100 + (i % 97), all), rawBytes: sum((i) => 1000 + (i % 13), all) });
    await c.remove([...rs.slice(0, 40), raw(1, 'never')]);
    const left = all.slice(40);
    expect(await c.stats()).toEqual({ chunks: 60, storedBytes: sum((i) => 100 + (i % 97), left), rawBytes: sum((i) => 1000 + (i % 13), left) });
    expect((await c.lookup(rs)).map((e) => e !== null)).toEqual(all.map((i) => i >= 40));
    await c.remove([]);
    expect((await c.stats()).chunks).toBe(60);
  });
});

test('SqliteChunkCatalog opens an index.db written by PackIndex (the local store\'s file as today)', async () => {
  const path = join(newDir(), 'index.db');
  const index = new PackIndex(path);
  const rs = raws(0, 3);
  index.commit(rs.map((r, i) => ({ digest: digestFromRaw(r), loc: { pack: 'old-pack', offset: i * 10, length: 5 + i }, rawLength: 50 })), [], T0);
  index.close();
  const c = track(SqliteChunkCatalog.open(path));
  expect(await c.lookup(rs)).toEqual(rs.map((_, i) => ({ pack: 'old-pack', offset: i * 10, length: 5 + i, rawLength: 50, mtimeMs: T0 })));
  await c.commit([row(raw(7), 7, 'new-pack')], [rs[0]!], T0 + 1);
  await c.close();
  const again = new PackIndex(path);
  expect(again.get(digestFromRaw(raw(7)))).toMatchObject({ pack: 'new-pack', offset: 7000 });
  expect(again.get(digestFromRaw(rs[0]!))!.mtimeMs).toBe(T0 + 1);
  again.close();
});

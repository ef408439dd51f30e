/**
 * The PostgreSQL chunk catalog as replicas use it (issue 11): two catalogs
 * (two pools, as two `snapyard serve` processes) on one database. Commits of
 * overlapping chunks from both keep one row each; a sweep on one and
 * touches from the other never lose a chunk a touch reported held; a
 * lookup or commit is one round trip whatever its size; a database that is
 * down, silent or cut off gives STORE_UNAVAILABLE, never a hang. The shared
 * contract: chunk-catalog.contract.test.ts.
 */
import { createServer, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { afterEach, describe, expect, test } from 'vitest';
import { startWireProxy, type WireProxy } from '../bench/wire-proxy.js';
import { CHUNK_CATALOG_SCHEMA_VERSION, openPostgresChunkCatalog, type PostgresChunkCatalog } from '../storage/chunks/postgres-chunk-catalog.js';
import { fill, pgCatalog, raw, raws, row } from './helpers/chunk-catalogs.js';
import { codeOf, freshPostgresUrl } from './helpers/metadata-stores.js';
import { testPostgres } from './helpers/services.js';

const T0 = 1_700_000_000_000;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c().catch(() => {});
});

async function client(url: string): Promise<pg.Client> {
  const c = new pg.Client(url);
  await c.connect();
  closers.push(() => c.end());
  return c;
}

async function twoReplicas(pageSize?: number): Promise<{ url: string; a: PostgresChunkCatalog; b: PostgresChunkCatalog }> {
  const url = await freshPostgresUrl();
  const [a, b] = await Promise.all([pgCatalog(url, { pageSize }), pgCatalog(url, { pageSize })]);
  return { url, a, b };
}

/** Waits until a statement starting with `prefix` is waiting for a lock that `blocker` (a backend pid) holds. */
async function waitBlocked(watch: pg.Client, prefix: string, blocker: number): Promise<void> {
  for (;;) {
    const { rows } = await watch.query(
      `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND starts_with(query, $1) AND $2 = ANY(pg_blocking_pids(pid))`, [prefix, blocker]);
    if (rows.length > 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
}

const backendPid = async (c: pg.Client) => ((await c.query('SELECT pg_backend_pid() AS p')).rows[0] as { p: number }).p;

describe('PostgreSQL chunk catalog, two replicas on one database', () => {
  test('three catalogs opening a new schema at once migrate it once', async () => {
    const url = await freshPostgresUrl();
    const cs = await Promise.all([pgCatalog(url), pgCatalog(url), pgCatalog(url)]);
    const c = await client(url);
    expect((await c.query('SELECT version FROM snapyard_chunk_schema ORDER BY version')).rows)
      .toEqual(Array.from({ length: CHUNK_CATALOG_SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
    await cs[0]!.commit([row(raw(1), 1)], [], T0);
    expect((await cs[2]!.lookup([raw(1)]))[0]).not.toBeNull();
  });

  test('concurrent commits of overlapping chunks from both keep one row each, at one writer\'s place', async () => {
    const { url, a, b } = await twoReplicas();
    const batches = (from: number, to: number, pack: string) => {
      const out = [];
      for (let i = from; i < to; i += 500) out.push(raws(i, i + 500).map((r, j) => row(r, i + j, pack)));
      return out;
    };
    // a writes 0..9999, b writes 5000..14999 (last batch first): 5000 chunks written by both at about the same time.
    const results = await Promise.all([
      ...batches(0, 10000, 'pack-a').map((rs) => a.commit(rs, [], T0)),
      ...batches(5000, 15000, 'pack-b').reverse().map((rs) => b.commit(rs, [], T0 + 1)),
    ]);
    expect(results.every((r) => r.absent.length === 0)).toBe(true);
    const c = await client(url);
    expect((await c.query('SELECT COUNT(*)::int AS n, COUNT(DISTINCT digest)::int AS d FROM snapyard_chunks')).rows).toEqual([{ n: 15000, d: 15000 }]);
    const entries = await a.lookup(raws(0, 15000));
    entries.forEach((e, i) => {
      const place = [e!.pack, e!.offset];
      if (i < 5000) expect(place).toEqual(['pack-a', i * 1000]);
      else if (i >= 10000) expect(place).toEqual(['pack-b', i * 1000]);
      else expect([['pack-a', i * 1000], ['pack-b', i * 1000]], `chunk ${i}`).toContainEqual(place);
    });
    expect((await c.query('SELECT COUNT(*)::int AS n FROM snapyard_chunk_packs')).rows).toEqual([{ n: 2 }]);
  });

  test('a touch whose transaction is open when the sweep reaches its rows keeps them', async () => {
    const { url, a } = await twoReplicas(100);
    const rs = raws(0, 300);
    await fill(a, rs.map((r, i) => row(r, i)), T0);
    const sorted = [...rs].sort(Buffer.compare);
    const touchedEarly = sorted.slice(0, 20); // in the sweep's first batch
    // Another writer's touch, in flight: its row locks are held until it commits.
    const w = await client(url);
    await w.query('BEGIN');
    await w.query('UPDATE snapyard_chunks SET mtime_ms = $1 WHERE digest = ANY($2::bytea[])', [T0 + 2000, touchedEarly]);
    const sweeping = a.sweep(T0 + 1000, () => false, false);
    await waitBlocked(await client(url), 'DELETE FROM snapyard_chunks', await backendPid(w));
    await w.query('COMMIT');
    expect(await sweeping).toMatchObject({ chunks: 280 });
    const left = await a.lookup(rs);
    expect(left.filter((e) => e !== null)).toHaveLength(20);
    expect((await a.lookup(touchedEarly)).every((e) => e?.mtimeMs === T0 + 2000)).toBe(true);
  });

  test('a touch that comes while the sweep deletes its rows is answered absent', async () => {
    const { url, b } = await twoReplicas();
    const rs = raws(0, 50);
    await fill(b, rs.map((r, i) => row(r, i)), T0);
    // The sweep's delete of rs[0..9], in flight.
    const g = await client(url);
    await g.query('BEGIN');
    await g.query('DELETE FROM snapyard_chunks WHERE digest = ANY($1::bytea[]) AND mtime_ms < $2', [rs.slice(0, 10), T0 + 1000]);
    const touching = b.commit([], rs.slice(0, 20), T0 + 2000);
    await waitBlocked(await client(url), 'WITH newp AS', await backendPid(g));
    await g.query('COMMIT');
    expect(await touching).toEqual({ absent: Array.from({ length: 10 }, (_, i) => i) });
    expect((await b.lookup(rs.slice(0, 20))).map((e) => e?.mtimeMs ?? null)).toEqual([...Array(10).fill(null), ...Array(10).fill(T0 + 2000)]);
  });

  test('a sweep on one replica racing touches from the other: every chunk a touch reported held survives, nothing else old does', async () => {
    const { a, b } = await twoReplicas(500);
    const rs = raws(0, 20000);
    await fill(a, rs.map((r, i) => row(r, i)), T0);
    const held = new Set<string>();
    const absent = new Set<string>();
    let done = false;
    const touching = (async () => {
      for (let k = 0; !done; k++) {
        // 200 digests spread over the key range (the sweep walks it in order).
        const batch = Array.from({ length: 200 }, (_, j) => rs[(k * 7919 + j * 100) % rs.length]!);
        const r = await b.commit([], batch, T0 + 2000);
        const gone = new Set(r.absent);
        batch.forEach((d, j) => (gone.has(j) ? absent : held).add(d.toString('hex')));
      }
    })();
    const swept = await a.sweep(T0 + 1000, () => false, false);
    done = true;
    await touching;
    const left = new Set<string>();
    for await (const e of a.all()) {
      expect(e.mtimeMs).toBe(T0 + 2000); // no untouched old row left
      left.add(Buffer.from(e.raw).toString('hex'));
    }
    for (const h of held) expect(left.has(h), `touched ${h} and told held`).toBe(true);
    for (const h of absent) if (!held.has(h)) expect(left.has(h)).toBe(false);
    expect(left.size).toBe(held.size);
    expect(swept.chunks).toBe(20000 - left.size);
    // The race happened: some touches came before the sweep reached their rows, some after.
    expect(held.size).toBeGreaterThan(0);
    expect([...absent].filter((h) => !held.has(h)).length).toBeGreaterThan(0);
  });

  test('round trips: one per lookup and per commit whatever the batch, one per remove and prefix lookup; a sweep one per page and batch', async () => {
    const { a } = await twoReplicas(1000);
    const count = async (f: () => Promise<unknown>) => {
      const before = a.roundTrips;
      await f();
      return a.roundTrips - before;
    };
    const rs = raws(0, 4096);
    expect(await count(() => a.commit(rs.map((r, i) => row(r, i, 'new-pack')), [], T0))).toBe(1); // a pack new to this process
    expect(await count(() => a.commit(raws(0, 4096, 'more').map((r, i) => row(r, i, 'new-pack')), rs.slice(0, 100), T0 + 1))).toBe(1);
    expect(await count(() => a.commit([row(raw(1, 'x'), 1, 'new-pack')], [], T0 + 2))).toBe(1);
    expect(await count(() => a.lookup(rs))).toBe(1);
    expect(await count(() => a.lookup([rs[0]!]))).toBe(1);
    expect(await count(() => a.resolvePrefixes(rs.map((r) => r.subarray(0, 12))))).toBe(1); // 4096 prefixes, one statement
    expect(await count(() => a.remove(rs.slice(4000)))).toBe(1);
    // Of the 8097 rows, the 3900 of rs not touched are before T0 + 1: 4 pages (the last one short), 4 deletes.
    expect(await count(() => a.sweep(T0 + 1, () => false, false))).toBe(4 + 4);
  });
});

describe('PostgreSQL chunk catalog unavailable', () => {
  const free = async (): Promise<Server> => {
    const sockets = new Set<Socket>();
    const s = createServer((sock) => void sockets.add(sock.on('error', () => {}))); // accepts, never answers
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => {
      for (const sock of sockets) sock.destroy();
      s.close(r);
    }));
    return s;
  };
  const via = (url: string, port: number) => {
    const u = new URL(url);
    u.port = String(port);
    return u.toString();
  };

  test('nothing listening: opening fails with STORE_UNAVAILABLE', { timeout: 20_000 }, async () => {
    const s = await free();
    const port = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r)); // the port refuses connections now
    expect(await codeOf(openPostgresChunkCatalog(via(await testPostgres(), port), { connectTimeoutMs: 2000 }))).toBe('STORE_UNAVAILABLE');
  });

  test('a server that accepts and never answers: STORE_UNAVAILABLE after the connect timeout', { timeout: 20_000 }, async () => {
    const s = await free();
    const e = await openPostgresChunkCatalog(via(await testPostgres(), (s.address() as { port: number }).port), { connectTimeoutMs: 500 }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringContaining('chunk catalog') });
  });

  test('the database going away under an open catalog: lookup, commit, sweep and stats fail with STORE_UNAVAILABLE', { timeout: 20_000 }, async () => {
    const url = await freshPostgresUrl();
    const proxy: WireProxy = await startWireProxy(Number(new URL(url).port));
    closers.push(() => proxy.close());
    const c = await pgCatalog(via(url, proxy.port), { connectTimeoutMs: 1000, statementTimeoutMs: 2000 });
    await c.commit([row(raw(1), 1)], [], T0);
    await proxy.close(); // open connections cut, new ones refused
    expect(await codeOf(c.lookup([raw(1)]))).toBe('STORE_UNAVAILABLE');
    expect(await codeOf(c.commit([row(raw(2), 2)], [raw(1)], T0 + 1))).toBe('STORE_UNAVAILABLE');
    expect(await codeOf(c.sweep(T0 + 10, () => false, false))).toBe('STORE_UNAVAILABLE');
    expect(await codeOf(c.stats())).toBe('STORE_UNAVAILABLE');
  });
});

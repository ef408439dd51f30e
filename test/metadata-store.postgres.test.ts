/**
 * The PostgreSQL metadata store as replicas use it (issue 11): two stores
 * (two pools, as two `snapyard serve` processes) on one database. Moves of
 * one tag from both at once are recorded in order; a manifest committed by
 * both at once is stored once; gc and a link racing never leave a link to a
 * deleted blob record; migrations run once; upload records of another
 * replica survive clearUploads; round trips of a commit do not grow with its
 * references; a database that is down or silent gives STORE_UNAVAILABLE
 * (never a hang). The shared contract: metadata-store.contract.test.ts.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import pg from 'pg';
import { afterEach, describe, expect, test } from 'vitest';
import type { Digest } from '../storage/digest.js';
import { openPostgresMetadata, type PostgresMetadataStore } from '../storage/meta/postgres-metadata-store.js';
import { PG_SCHEMA_VERSION } from '../storage/meta/postgres-schema.js';
import { blob, clock, codeOf, digestOf, freshPostgresUrl, image, replica } from './helpers/metadata-stores.js';
import { testPostgres } from './helpers/services.js';

const open: PostgresMetadataStore[] = [];
const servers: Server[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close().catch(() => {});
  for (const s of servers.splice(0)) s.close();
});

async function twoReplicas() {
  const url = await freshPostgresUrl();
  const c = clock();
  const a = await replica(url, c);
  const b = await replica(url, c);
  open.push(a, b);
  return { url, c, a, b };
}

async function rows(url: string, sql: string): Promise<Array<Record<string, unknown>>> {
  const client = new pg.Client(url);
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } finally {
    await client.end();
  }
}

/** A TCP listener on a free loopback port; `onSocket` decides what happens to connections. */
async function listen(onSocket: (s: Socket) => void): Promise<{ port: number; sockets: Set<Socket>; server: Server }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, sockets, server };
}

function viaPort(url: string, port: number): string {
  const u = new URL(url);
  u.port = String(port);
  return u.toString();
}

describe('PostgreSQL metadata store, two replicas on one database', () => {
  test('20 moves of one tag from each replica at once: 40 events, each old digest the previous new one', async () => {
    const { a, b } = await twoReplicas();
    const l = await blob(a, 'r', 'layer');
    const ms = Array.from({ length: 41 }, (_, i) => image('r', [l], { annotations: { i: String(i) } }));
    for (const m of ms) await a.commitManifest(m, 'push');
    await a.setTag('r', 'hot', ms[40]!.digest, 'push');
    const mine = (s: PostgresMetadataStore, from: number) =>
      Promise.all(Array.from({ length: 20 }, (_, i) => s.moveTag('r', 'hot', { digest: ms[from + i]!.digest })));
    const [ra, rb] = await Promise.all([mine(a, 0), mine(b, 20)]);
    const events = (await b.tagHistory('r', 'hot')).reverse(); // oldest first
    expect(events).toHaveLength(41);
    expect(events[0]).toMatchObject({ oldDigest: null, newDigest: ms[40]!.digest });
    for (let i = 1; i < events.length; i++) {
      expect(events[i]!.oldDigest, `move ${i}`).toBe(events[i - 1]!.newDigest);
      expect(events[i]!.source).toBe('tag');
    }
    // What each call answered is the move recorded: its old digest is what the tag held just before.
    const moves = new Map(events.slice(1).map((e) => [e.newDigest, e.oldDigest]));
    for (const r of [...ra, ...rb]) expect(moves.get(r.new), r.new).toBe(r.old);
    expect(new Set(events.slice(1).map((e) => e.newDigest)).size).toBe(40);
    expect(await a.resolveTag('r', 'hot')).toBe(events[40]!.newDigest);
  });

  test('the same manifest committed by both replicas at once is stored once, its tag moved once', async () => {
    const { url, a, b } = await twoReplicas();
    const l = await blob(a, 'r', 'layer');
    const m = image('r', [l], { tag: 'v1' });
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).commitManifest(m, 'push')));
    expect(results.every((r) => r.missing.length === 0)).toBe(true);
    expect(await rows(url, `SELECT COUNT(*)::int AS n FROM manifests`)).toEqual([{ n: 1 }]);
    expect(await rows(url, `SELECT COUNT(*)::int AS n FROM manifest_refs`)).toEqual([{ n: 1 }]);
    expect((await a.tagHistory('r', 'v1')).length).toBe(1);
  });

  test('gc and links racing: a blob is either kept and linked, or deleted and not linked', async () => {
    const { c, a, b } = await twoReplicas();
    const old = await Promise.all(Array.from({ length: 20 }, (_, i) => blob(a, 'r', `old ${i}`)));
    for (const x of old) await a.unlinkBlob('r', x.digest); // records only: gc would delete them
    c.t += 1000;
    const cutoff = c.t;
    const [gc, ...linked] = await Promise.all([a.gcBlobs(cutoff, false), ...old.map((x) => b.linkBlob('r2', x.digest))]);
    for (const [i, x] of old.entries()) {
      const kept = (await a.getBlob(x.digest)) !== null;
      expect(kept, x.digest).toBe(linked[i]);
      expect(await a.isLinked('r2', x.digest)).toBe(linked[i]);
      expect(gc.deleted.includes(x.digest)).toBe(!kept);
    }
    expect(await a.danglingRefs()).toEqual([]);
  });

  test('two replicas opening a new database at once migrate it once', async () => {
    const url = await freshPostgresUrl();
    const c = clock();
    const stores = await Promise.all([replica(url, c), replica(url, c), replica(url, c)]);
    open.push(...stores);
    const applied = await rows(url, 'SELECT version FROM snapyard_schema ORDER BY version');
    expect(applied).toEqual(Array.from({ length: PG_SCHEMA_VERSION }, (_, i) => ({ version: i + 1 })));
    await stores[2]!.commitBlob('r', { digest: digestOf('x'), size: 1, indexDigest: digestOf('i') });
    expect(await stores[0]!.getBlob(digestOf('x'))).not.toBeNull();
  });

  test("clearUploads at start leaves other replicas' live sessions, removes its own and stale ones", async () => {
    const { url, c, a } = await twoReplicas();
    await a.createUpload('a-live-0001', 'r');
    c.t -= 2 * 3600_000;
    await a.createUpload('a-stale-0001', 'r'); // idle for two hours by now
    c.t += 2 * 3600_000;
    const restarted = await replica(url, c, { uploadStaleMs: 3600_000 });
    open.push(restarted);
    await restarted.createUpload('mine-0001', 'r');
    await restarted.clearUploads();
    expect(await restarted.getUpload('a-live-0001')).not.toBeNull();
    expect(await restarted.getUpload('a-stale-0001')).toBeNull();
    expect(await restarted.getUpload('mine-0001')).toBeNull();
  });

  test('round trips of a commit do not grow with its references', async () => {
    const { a } = await twoReplicas();
    const count = async (f: () => Promise<unknown>) => {
      const before = a.roundTrips;
      await f();
      return a.roundTrips - before;
    };
    expect(await count(() => a.commitBlob('r', { digest: digestOf('b'), size: 1, indexDigest: digestOf('i') }))).toBe(3);
    const few = [await blob(a, 'r', 'one')];
    const many = await Promise.all(Array.from({ length: 300 }, (_, i) => blob(a, 'r', `l${i}`)));
    const one = await count(() => a.commitManifest(image('r', few), 'push'));
    const lots = await count(() => a.commitManifest(image('r', many), 'push'));
    const tagged = await count(() => a.commitManifest(image('r', many, { tag: 't' }), 'push'));
    expect([one, lots, tagged]).toEqual([4, 4, 6]);
  });
});

describe('PostgreSQL unavailable', () => {
  test('nothing listening: opening fails with STORE_UNAVAILABLE', async () => {
    const { port, server } = await listen(() => {});
    await new Promise<void>((r) => server.close(() => r())); // the port is free again: connections are refused
    const e = await openPostgresMetadata(viaPort(await testPostgres(), port), { connectTimeoutMs: 2000 }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STORE_UNAVAILABLE' });
  });

  test('a server that accepts and never answers: STORE_UNAVAILABLE after the connect timeout, not a hang', async () => {
    const { port } = await listen(() => {}); // silent
    const e = await openPostgresMetadata(viaPort(await testPostgres(), port), { connectTimeoutMs: 500 }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STORE_UNAVAILABLE' });
  });

  test('the database going away under an open store: calls fail with STORE_UNAVAILABLE, probe too', async () => {
    const url = await freshPostgresUrl();
    const target = new URL(url);
    let up = true;
    const proxy = await listen((s) => {
      if (!up) return void s.destroy();
      const to = connect(Number(target.port), target.hostname);
      to.on('error', () => s.destroy());
      s.on('close', () => to.destroy());
      to.on('close', () => s.destroy());
      s.pipe(to).pipe(s);
    });
    const s = await openPostgresMetadata(viaPort(url, proxy.port), { connectTimeoutMs: 1000, statementTimeoutMs: 2000 });
    open.push(s);
    await s.probe();
    await s.commitBlob('r', { digest: digestOf('x'), size: 1, indexDigest: digestOf('i') });
    up = false;
    for (const sock of proxy.sockets) sock.destroy();
    expect(await codeOf(s.getBlob(digestOf('x') as Digest))).toBe('STORE_UNAVAILABLE');
    expect(await codeOf(s.probe())).toBe('STORE_UNAVAILABLE');
    expect(await codeOf(s.moveTag('r', 't', { tag: 'u' }))).toBe('STORE_UNAVAILABLE');
  });
});

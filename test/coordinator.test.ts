/**
 * The coordinator (storage/coord/coordinator.ts): one suite for the local
 * (in-process) one and for PostgreSQL's, then what only several replicas on
 * one database show: sessions seen across replicas, the maintenance lease
 * (one holder at a time, a waiting holder gets it when it is released, a
 * holder whose lease expired and was taken is stopped by its fence), and the
 * oldest open session gc keeps chunks for. Real PostgreSQL 15.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { LocalCoordinator, type Coordinator } from '../storage/coord/coordinator.js';
import { PostgresCoordinator } from '../storage/coord/postgres-coordinator.js';
import { isSnapyardError } from '../storage/errors.js';
import type { PostgresMetadataStore } from '../storage/meta/postgres-metadata-store.js';
import { clock, freshPostgresUrl, replica, type Clock } from './helpers/metadata-stores.js';

const TTL = 60_000;
const open: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const x of open.splice(0)) await x.close();
});

async function pgReplica(url: string, c: Clock, o: { leaseWaitMs?: number; selfUrl?: string } = {}): Promise<{ meta: PostgresMetadataStore; coord: PostgresCoordinator }> {
  const meta = await replica(url, c, { ownerUrl: o.selfUrl ?? null });
  open.push(meta);
  const coord = new PostgresCoordinator(meta.db, { owner: meta.owner, schema: meta.schema, sessionTtlMs: TTL, now: c.now, leasePollMs: 20, ...o });
  return { meta, coord };
}

const impls: Array<{ name: string; make(c: Clock): Promise<Coordinator> }> = [
  { name: 'local', make: async (c) => new LocalCoordinator(c.now, TTL) },
  { name: 'postgres', make: async (c) => (await pgReplica(await freshPostgresUrl(), c)).coord },
];

describe.each(impls)('coordinator contract: $name', ({ make }) => {
  test('push sessions: created, read with or without their index, refreshed, expired, deleted', async () => {
    const c = clock();
    const co = await make(c);
    await co.createPushSession({ id: 's1', repo: 'r', width: 12, compact: Buffer.from('index-one') }, 1024);
    await co.createPushSession({ id: 's2', repo: 'r', width: 32, compact: Buffer.from('two') }, 1024);
    const s1 = await co.getPushSession('s1', true);
    expect(s1).toMatchObject({ id: 's1', repo: 'r', width: 12 });
    expect(s1!.compact!.toString()).toBe('index-one');
    expect((await co.getPushSession('s2', false))!.compact).toBeNull();
    expect(await co.getPushSession('nope', false)).toBeNull();
    c.t += TTL / 2;
    await co.getPushSession('s1', false); // s1 active again
    c.t += TTL / 2 + 1;
    expect(await co.getPushSession('s2', false)).toBeNull(); // idle past the TTL: not answered, even before it is expired
    expect(await co.expirePushSessions(c.now() - TTL)).toEqual(['s2']);
    expect([...(await co.openPushSessions(['s1', 's2', 'x']))]).toEqual(['s1']);
    expect(await co.deletePushSession('s1')).toBe(true);
    expect(await co.deletePushSession('s1')).toBe(false);
  });

  test('push sessions: past the index-bytes cap LIMIT_EXCEEDED, nothing recorded; room again once one closes', async () => {
    const co = await make(clock());
    await co.createPushSession({ id: 'a', repo: 'r', width: 8, compact: Buffer.alloc(600) }, 1000);
    const e = await co.createPushSession({ id: 'b', repo: 'r', width: 8, compact: Buffer.alloc(500) }, 1000).catch((x: unknown) => x);
    expect(isSnapyardError(e, 'LIMIT_EXCEEDED')).toBe(true);
    expect(await co.getPushSession('b', false)).toBeNull();
    await co.deletePushSession('a');
    await co.createPushSession({ id: 'b', repo: 'r', width: 8, compact: Buffer.alloc(500) }, 1000);
  });

  test('maintenance: one at a time in one process', async () => {
    const co = await make(clock());
    const order: string[] = [];
    await Promise.all([1, 2].map((n) => co.withMaintenance(async (lease) => {
      order.push(`start ${n}`);
      await lease.check();
      await new Promise((r) => setTimeout(r, 50));
      order.push(`end ${n}`);
    })));
    expect(order).toEqual(['start 1', 'end 1', 'start 2', 'end 2']);
  });
});

describe('coordinator across replicas (PostgreSQL)', () => {
  test('a push session opened on one replica is read, refreshed and closed on another', async () => {
    const url = await freshPostgresUrl();
    const c = clock();
    const a = await pgReplica(url, c);
    const b = await pgReplica(url, c);
    await a.coord.createPushSession({ id: 'x', repo: 'r', width: 12, compact: Buffer.from('idx') }, 1 << 20);
    expect((await b.coord.getPushSession('x', true))!.compact!.toString()).toBe('idx');
    c.t += TTL + 1;
    expect(await b.coord.getPushSession('x', false)).toBeNull(); // idle past the TTL: expired for everyone
    expect(await a.coord.expirePushSessions(c.now() - TTL)).toEqual(['x']);
  });

  test('upload holders: another replica learns where an upload session is held; the holder itself is told null', async () => {
    const url = await freshPostgresUrl();
    const c = clock();
    const a = await pgReplica(url, c, { selfUrl: 'http://10.0.0.1:5000' });
    const b = await pgReplica(url, c, { selfUrl: 'http://10.0.0.2:5000' });
    await a.meta.createUpload('upload-1', 'r');
    expect(await b.coord.uploadHolder('upload-1')).toBe('http://10.0.0.1:5000');
    expect(await a.coord.uploadHolder('upload-1')).toBeNull();
    expect(await b.coord.uploadHolder('unknown-1')).toBeNull();
  });

  test('the oldest open session, upload or push, on any replica; idle ones do not count', async () => {
    const url = await freshPostgresUrl();
    const c = clock();
    const a = await pgReplica(url, c);
    const b = await pgReplica(url, c);
    expect(await b.coord.oldestSessionMs(c.now() - TTL)).toBeNull();
    const t0 = c.now();
    await a.meta.createUpload('upload-1', 'r');
    c.t += 1000;
    await a.coord.createPushSession({ id: 'p', repo: 'r', width: 12, compact: Buffer.from('i') }, 1 << 20);
    expect(await b.coord.oldestSessionMs(c.now() - TTL)).toBe(t0);
    await a.meta.deleteUpload('upload-1');
    expect(await b.coord.oldestSessionMs(c.now() - TTL)).toBe(t0 + 1000);
    c.t += TTL + 1;
    expect(await b.coord.oldestSessionMs(c.now() - TTL)).toBeNull();
  });

  test('the maintenance lease: a second replica waits for the first; then takes it', async () => {
    const url = await freshPostgresUrl();
    const c = clock();
    const a = await pgReplica(url, c);
    const b = await pgReplica(url, c);
    const order: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const first = a.coord.withMaintenance(async () => {
      order.push('a start');
      await held;
      order.push('a end');
    });
    while (order.length === 0) await new Promise((r) => setTimeout(r, 10));
    const second = b.coord.withMaintenance(async () => void order.push('b'));
    await new Promise((r) => setTimeout(r, 200));
    expect(order).toEqual(['a start']); // b is waiting
    release();
    await Promise.all([first, second]);
    expect(order).toEqual(['a start', 'a end', 'b']);
  });

  test('a holder whose lock connection broke (and whose lease another took) is stopped by its fence', async () => {
    const url = await freshPostgresUrl();
    const c = clock();
    const a = await pgReplica(url, c);
    const b = await pgReplica(url, c);
    let fenced: unknown = null;
    let resume!: () => void;
    const stalled = new Promise<void>((r) => (resume = r));
    let held = false;
    const first = a.coord.withMaintenance(async (lease) => {
      await lease.check();
      held = true;
      await stalled; // a long pause, during which its connection is lost and b takes the lease
      fenced = await lease.check().then(() => null, (e: unknown) => e);
    });
    while (!held) await new Promise((r) => setTimeout(r, 10));
    // The connection holding the advisory lock dies (as it does when the holder's process is killed).
    await a.meta.db.query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()");
    let bRan = false;
    await b.coord.withMaintenance(async (lease) => {
      await lease.check();
      bRan = true;
    });
    resume();
    await first;
    expect(bRan).toBe(true);
    expect(isSnapyardError(fenced, 'CONFLICT')).toBe(true);
    // And the lease is free again for either.
    await a.coord.withMaintenance(async (lease) => lease.check());
  });

  test('a replica waiting past leaseWaitMs gets CONFLICT naming the holder', async () => {
    const url = await freshPostgresUrl();
    const c = clock();
    const a = await pgReplica(url, c);
    const b = await pgReplica(url, { now: Date.now } as Clock, { leaseWaitMs: 300 });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let started = false;
    const first = a.coord.withMaintenance(async () => {
      started = true;
      await held;
    });
    while (!started) await new Promise((r) => setTimeout(r, 10));
    const e = await b.coord.withMaintenance(async () => {}).catch((x: unknown) => x);
    release();
    await first;
    expect(isSnapyardError(e, 'CONFLICT')).toBe(true);
    expect(String((e as Error).message)).toContain(a.meta.owner);
  });
});

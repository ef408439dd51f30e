/**
 * RemoteChunkStores under test (test/remote-chunk-store.test.ts): a "site" is
 * one shared place (a bucket prefix on the run's RGW and a fresh PostgreSQL
 * schema, or a local pack directory and a SQLite index); each store opened on
 * it is a replica with a driver, a catalog (its own pool) and a spool
 * directory of its own. Catalog and driver calls are counted by a
 * pass-through wrapper. Every store is closed and every pack deleted after
 * each test.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type { ChunkCatalog } from '../../storage/chunks/chunk-catalog.js';
import { LocalPackDriver } from '../../storage/chunks/local-pack-driver.js';
import type { PackDriver } from '../../storage/chunks/pack-driver.js';
import { openPostgresChunkCatalog } from '../../storage/chunks/postgres-chunk-catalog.js';
import { MaintainedRemoteChunkStore, type MaintainedRemoteChunkStoreOptions } from '../../storage/chunks/remote-chunk-maintenance.js';
import { S3PackDriver } from '../../storage/chunks/s3-pack-driver.js';
import { SqliteChunkCatalog } from '../../storage/chunks/sqlite-chunk-catalog.js';
import { freshPostgresUrl } from './metadata-stores.js';
import { testS3 } from './services.js';
import { tempDirs } from './tmp.js';

export const newDir = tempDirs('snapyard-remote-');

/** Calls made to a catalog, by method. */
export type CallCounts = Record<string, number>;

/** The catalog with its calls counted in `counts` (every call goes through to it). */
export function counted(catalog: ChunkCatalog, counts: CallCounts): ChunkCatalog {
  return new Proxy(catalog, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function' || typeof prop !== 'string') return v;
      return (...args: unknown[]) => {
        counts[prop] = (counts[prop] ?? 0) + 1;
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

export interface Replica {
  store: MaintainedRemoteChunkStore;
  spoolDir: string;
  calls: CallCounts;
}

export interface Site {
  name: 's3+postgres' | 'local+sqlite';
  /** A store on the site (a replica). local+sqlite: one at a time (SQLite's index is one process's). */
  replica(o?: Partial<MaintainedRemoteChunkStoreOptions>): Promise<Replica>;
  /** A driver and catalog of the site for looking under the stores (closed after the test). */
  driver(): Promise<PackDriver>;
  catalog(): Promise<ChunkCatalog>;
  /** What a child process needs to open a store on the site (s3+postgres). */
  env?: Record<string, string>;
}

const toClose: Array<{ close(): Promise<void> }> = [];
const drivers: PackDriver[] = [];

afterEach(async () => {
  for (const c of toClose.splice(0).reverse()) await c.close().catch(() => {});
  // Leave nothing in the bucket (RGW's memstore keeps objects in RAM).
  for (const d of drivers.splice(0)) {
    const names: string[] = [];
    for await (const p of d.list()) names.push(p.name);
    await d.delete(names).catch(() => {});
    await d.close();
  }
});

function track<T extends { close(): Promise<void> }>(x: T): T {
  toClose.push(x);
  return x;
}

async function replicaOf(site: Pick<Site, 'driver' | 'catalog'>, o: Partial<MaintainedRemoteChunkStoreOptions>): Promise<Replica> {
  const calls: CallCounts = {};
  const spoolDir = o.spoolDir ?? join(newDir(), 'spool');
  const store = track(new MaintainedRemoteChunkStore({ driver: await site.driver(), catalog: counted(await site.catalog(), calls), spoolDir, ...o }));
  return { store, spoolDir, calls };
}

/** A fresh bucket prefix and PostgreSQL schema. */
export async function s3PostgresSite(): Promise<Site> {
  const s3 = await testS3();
  const location = s3.withPrefix(`remote-${process.pid}-${randomBytes(4).toString('hex')}`);
  const pgUrl = await freshPostgresUrl();
  const credentials = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
  const site: Site = {
    name: 's3+postgres',
    driver: async () => new S3PackDriver({ location, credentials }),
    catalog: async () => openPostgresChunkCatalog(pgUrl, { poolSize: 4 }),
    replica: (o = {}) => replicaOf(site, o),
    env: { REMOTE_S3: location, REMOTE_PG: pgUrl, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey },
  };
  // One driver of the site deletes its packs after the test.
  const cleaner = await site.driver();
  drivers.push(cleaner);
  const driver = site.driver;
  site.driver = async () => track(await driver());
  const catalog = site.catalog;
  site.catalog = async () => track(await catalog());
  return site;
}

/** A local pack directory and a SQLite index: no service at all. */
export function localSqliteSite(): Site {
  const dir = newDir();
  const site: Site = {
    name: 'local+sqlite',
    driver: async () => track(new LocalPackDriver({ dir: join(dir, 'packs') })),
    catalog: async () => track(SqliteChunkCatalog.open(join(dir, 'index.db'))),
    replica: (o = {}) => replicaOf(site, o),
  };
  return site;
}

/** Packs and their bytes in a driver's bucket prefix or directory. */
export async function bucketBytes(d: PackDriver): Promise<{ packs: number; bytes: number }> {
  let packs = 0;
  let bytes = 0;
  for await (const p of d.list()) {
    packs++;
    bytes += p.size;
  }
  return { packs, bytes };
}

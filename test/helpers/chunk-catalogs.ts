/**
 * The chunk catalogs under test (test/chunk-catalog.*.test.ts): SQLite
 * (the local store's index.db) in a temp directory, PostgreSQL in a fresh
 * schema of the run's server (test/helpers/services.ts); digests and rows to
 * fill them with. Every catalog opened here is closed after each test.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type { ChunkCatalog, NewCatalogEntry } from '../../storage/chunks/chunk-catalog.js';
import { openPostgresChunkCatalog, type PostgresChunkCatalog, type PostgresChunkCatalogOptions } from '../../storage/chunks/postgres-chunk-catalog.js';
import { SqliteChunkCatalog } from '../../storage/chunks/sqlite-chunk-catalog.js';
import { freshPostgresUrl } from './metadata-stores.js';
import { tempDirs } from './tmp.js';

export const newDir = tempDirs('snapyard-catalog-');

const opened: ChunkCatalog[] = [];
afterEach(async () => {
  for (const c of opened.splice(0)) await c.close().catch(() => {});
});

/** Closed after the test. */
export function track<T extends ChunkCatalog>(c: T): T {
  opened.push(c);
  return c;
}

export interface CatalogImpl {
  name: 'sqlite' | 'postgres';
  /** A new, empty catalog; `pageSize`: rows per sweep batch and all() page. */
  open(pageSize?: number): Promise<ChunkCatalog>;
}

export const CATALOGS: CatalogImpl[] = [
  { name: 'sqlite', open: async (pageSize) => track(SqliteChunkCatalog.open(join(newDir(), 'index.db'), { pageSize })) },
  { name: 'postgres', open: async (pageSize) => track(await openPostgresChunkCatalog(await freshPostgresUrl(), { pageSize, poolSize: 4 })) },
];

/** Another PostgreSQL catalog (a replica: its own pool) on `url`. */
export async function pgCatalog(url: string, opts: PostgresChunkCatalogOptions = {}): Promise<PostgresChunkCatalog> {
  return track(await openPostgresChunkCatalog(url, { poolSize: 4, ...opts }));
}

/** The raw digest of chunk `n` (of family `tag`). */
export function raw(n: number, tag = 'chunk'): Buffer {
  return createHash('sha256').update(`${tag} ${n}`).digest();
}

export function raws(from: number, to: number, tag = 'chunk'): Buffer[] {
  return Array.from({ length: to - from }, (_, i) => raw(from + i, tag));
}

/** A row for digest `r`, written as record `i` of `pack` (lengths derived from i, so sums are checkable). */
export function row(r: Uint8Array, i: number, pack = 'pack-a'): NewCatalogEntry {
  return { raw: r, pack, offset: i * 1000, length: 100 + (i % 97), rawLength: 1000 + (i % 13) };
}

/** Commits rows in batches of `batch` at `now`. */
export async function fill(c: ChunkCatalog, rows: NewCatalogEntry[], now: number, batch = 5000): Promise<void> {
  for (let i = 0; i < rows.length; i += batch) {
    const { absent } = await c.commit(rows.slice(i, i + batch), [], now);
    if (absent.length > 0) throw new Error('nothing was touched');
  }
}

export function hex(r: Uint8Array | null | undefined | 'ambiguous'): string | null | 'ambiguous' {
  if (r === 'ambiguous' || r == null) return r ?? null;
  return Buffer.from(r).toString('hex');
}

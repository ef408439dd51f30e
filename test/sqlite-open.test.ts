/**
 * The store's SQLite connections keep their page cache within a bound
 * (better-sqlite3's build default is 16 MB per connection, outside
 * --cache-memory), and are in WAL mode with synchronous = NORMAL.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { openSharedSqlite } from '../storage/sqlite-open.js';

const dir = mkdtempSync(join(tmpdir(), 'snapyard-sqlite-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('page cache capped at 4 MiB by default, or as asked; WAL and synchronous NORMAL', () => {
  const a = openSharedSqlite(join(dir, 'a.db'));
  expect(a.pragma('cache_size', { simple: true })).toBe(-4096);
  expect(a.pragma('journal_mode', { simple: true })).toBe('wal');
  expect(a.pragma('synchronous', { simple: true })).toBe(1);
  a.close();
  const b = openSharedSqlite(join(dir, 'b.db'), 1000, 1024);
  expect(b.pragma('cache_size', { simple: true })).toBe(-1024);
  b.close();
});

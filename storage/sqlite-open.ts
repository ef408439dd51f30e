import Database from 'better-sqlite3';

/**
 * Opens a SQLite database that several processes may open at once (pods on
 * one node sharing a cache, replicas' tools): busy_timeout first, then WAL,
 * then synchronous = NORMAL. Switching a fresh file to WAL can answer
 * SQLITE_BUSY at once, without waiting on the busy handler, while another
 * opener holds a lock on it: that step is retried (pauses of 5 ms to 200 ms)
 * for up to `waitMs`.
 *
 * Each connection's page cache is capped at `cacheKiB` (default 4 MiB).
 * better-sqlite3 builds SQLite with a 16 MB default per connection, outside
 * the `--cache-memory` budget, and a server holds three (chunk index,
 * metadata, sketches): with bench/load.ts's 100 clients and 10 pushers the
 * main malloc heap stood at 97 MB at minute 1 with the default, 77 MB with
 * this cap. Pages past the cap come from the OS page cache.
 */
export function openSharedSqlite(path: string, waitMs = 10_000, cacheKiB = 4096): Database.Database {
  const db = new Database(path);
  try {
    db.pragma('busy_timeout = 5000');
    const deadline = Date.now() + waitMs;
    for (let pause = 5; ; pause = Math.min(pause * 2, 200)) {
      try {
        db.pragma('journal_mode = WAL');
        break;
      } catch (e) {
        if ((e as { code?: string }).code !== 'SQLITE_BUSY' || Date.now() > deadline) throw e;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pause);
      }
    }
    db.pragma('synchronous = NORMAL');
    db.pragma(`cache_size = -${Math.max(64, Math.floor(cacheKiB))}`);
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

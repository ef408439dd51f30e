import Database from 'better-sqlite3';

/**
 * Opens a SQLite database that several processes may open at once (pods on
 * one node sharing a cache, replicas' tools): busy_timeout first, then WAL,
 * then synchronous = NORMAL. Switching a fresh file to WAL can answer
 * SQLITE_BUSY at once, without waiting on the busy handler, while another
 * opener holds a lock on it: that step is retried (pauses of 5 ms to 200 ms)
 * for up to `waitMs`.
 */
export function openSharedSqlite(path: string, waitMs = 10_000): Database.Database {
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
    return db;
  } catch (e) {
    db.close();
    throw e;
  }
}

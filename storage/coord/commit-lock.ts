/**
 * An in-process async mutex. The Store owns one, the commit lock: every commit
 * that makes something reference chunks (blob commit, push commit, manifest
 * PUT) and GC's delete step run under it, so "the chunks are present" checked
 * by a commit and "nothing references them" concluded by the sweep cannot
 * interleave. The chunk index (store/index.db) and the metadata (meta.db) are
 * separate SQLite files, so no single SQLite transaction covers both: this
 * lock is what makes the check and the commit one critical section. It is per
 * process: several server replicas sharing a store would need a shared lock
 * (e.g. a lease row in a shared database) instead.
 */
export class AsyncLock {
  private tail: Promise<unknown> = Promise.resolve();
  private waiting = 0;

  async run<T>(fn: () => T | Promise<T>): Promise<T> {
    this.waiting++;
    const prev = this.tail;
    let done!: () => void;
    this.tail = new Promise<void>((r) => (done = r));
    try {
      await prev;
      return await fn();
    } finally {
      this.waiting--;
      done();
    }
  }

  /** Holders and waiters (for tests and stats). */
  get queued(): number {
    return this.waiting;
  }
}

/**
 * Cross-process locks on files of a shared directory (a node's hostPath
 * shared by the pods that start together): `<path>.lock`, made and kept fresh
 * by proper-lockfile; a lock whose holder died goes stale and is taken over.
 */
import lockfile from 'proper-lockfile';
import { SnapyardError } from '../storage/errors.js';

export interface LockOptions {
  /** How long to wait for another process's lock (default 1 h: it may be downloading a base). */
  waitMs?: number;
  /** A lock not refreshed for this long is stale (its holder died; default 30 s). */
  staleMs?: number;
}

export async function withFileLock<T>(path: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const waitMs = opts.waitMs ?? 60 * 60 * 1000;
  const t0 = Date.now();
  let release: (() => Promise<void>) | null = null;
  for (;;) {
    try {
      release = await lockfile.lock(path, { realpath: false, lockfilePath: `${path}.lock`, stale: opts.staleMs ?? 30_000, update: 5_000 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED') throw e;
      if (Date.now() - t0 > waitMs) throw new SnapyardError('BUSY', `${path} stayed locked by another process for ${Math.round(waitMs / 1000)} s`);
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 150));
    }
  }
  try {
    return await fn();
  } finally {
    await release().catch(() => undefined);
  }
}

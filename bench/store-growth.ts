/**
 * Store growth of a snapyard server, measured on what it keeps: the bytes of
 * its data directory (packs, indexes, SQLite databases) once it has settled
 * and been stopped cleanly, so that neither work it finishes after answering
 * (the resemblance sketches of new chunks are written for seconds after an
 * upload completes) nor the size of SQLite's write-ahead logs at that instant
 * (checkpointed and removed at a clean stop) lands in the wrong step.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { duBytes, startServer, type ServerProc } from './lib.js';

export interface GrowthServer {
  /** The running server's URL (it changes at every mark: the server is restarted). */
  url(): string;
  /** host:port, for docker:// references. */
  host(): string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** duBytes, or -1 while a file vanishes under it (a spool removed). */
function sizeNow(dir: string): number {
  try {
    return duBytes(dir);
  } catch {
    return -1;
  }
}

/** Waits until the directory's size stays the same for quietMs (at most maxMs; then says so on stderr). */
export async function settle(dir: string, quietMs = 3000, maxMs = 300_000): Promise<void> {
  const t0 = Date.now();
  let prev = sizeNow(dir);
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() - t0 > maxMs) {
      process.stderr.write(`warning: ${dir} still changing after ${maxMs / 1000} s; measured anyway\n`);
      return;
    }
    await sleep(250);
    const now = sizeNow(dir);
    if (now !== prev || now < 0) since = Date.now();
    prev = now;
  }
}

/**
 * Runs fn against a server on a fresh data directory `<tmp>/<name>`; fn's
 * mark() settles and stops the server, returns the growth since the last
 * mark (or since the empty store), and starts it again. The directory is
 * removed at the end unless keep.
 */
export async function onFreshServer(tmp: string, name: string, fn: (srv: GrowthServer, mark: () => Promise<number>) => Promise<void>, keep = false): Promise<void> {
  const data = join(tmp, name);
  let srv: ServerProc = await startServer(data);
  const stopped = async () => {
    await settle(data);
    await srv.stop();
    return duBytes(data);
  };
  try {
    let last = await stopped();
    srv = await startServer(data);
    await fn({ url: () => srv.url, host: () => srv.url.replace('http://', '') }, async () => {
      const now = await stopped();
      const grew = now - last;
      last = now;
      srv = await startServer(data);
      return grew;
    });
  } finally {
    if (srv.child.exitCode === null && srv.child.signalCode === null) await srv.stop();
    if (!keep) rmSync(data, { recursive: true, force: true });
  }
}

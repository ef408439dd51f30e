import { createReadStream, createWriteStream, mkdirSync } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { SnapyardError } from './errors.js';

/**
 * Bytes of open upload sessions: one append-only file per session,
 * `<root>/<id>`. The session's size in metadata is only advanced after the
 * bytes are on disk, so after a crash the file may be longer than the recorded
 * size, never shorter; appends start at the recorded size.
 */
export class UploadFiles {
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(readonly root: string) {
    mkdirSync(root, { recursive: true });
  }

  path(id: string): string {
    if (!/^[a-zA-Z0-9-]{8,64}$/.test(id)) throw new SnapyardError('INVALID_ARGUMENT', 'bad upload id');
    return join(this.root, id);
  }

  /** Runs fn with the session locked: PATCHes to one session are applied one at a time. */
  async locked<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(id) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    this.locks.set(id, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
  }

  /** Appends a stream at `at` (the recorded size); returns the number of bytes written. */
  async append(id: string, at: number, source: AsyncIterable<Uint8Array>, limit = Number.MAX_SAFE_INTEGER): Promise<number> {
    const path = this.path(id);
    let n = 0;
    const counted = Readable.from((async function* () {
      for await (const piece of source) {
        n += piece.byteLength;
        if (n > limit) throw new SnapyardError('SIZE_INVALID', `upload chunk larger than the declared ${limit} bytes`);
        yield piece;
      }
    })());
    await pipeline(counted, createWriteStream(path, { flags: at === 0 ? 'w' : 'r+', start: at }));
    return n;
  }

  /** Bytes [0, size) of the session. */
  read(id: string, size: number): AsyncIterable<Uint8Array> {
    if (size === 0) return (async function* () {})();
    return createReadStream(this.path(id), { start: 0, end: size - 1, highWaterMark: 1 << 20 });
  }

  async exists(id: string): Promise<boolean> {
    try {
      await stat(this.path(id));
      return true;
    } catch {
      return false;
    }
  }

  async remove(id: string): Promise<void> {
    await rm(this.path(id), { force: true });
  }
}

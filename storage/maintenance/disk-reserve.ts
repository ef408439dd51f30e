/**
 * Space kept back so a full disk can be relieved through the API: a file of
 * `bytes` zeros (DIR/reserve) made when the store opens (and made again once
 * there is room), given up the moment a deletion — rm, prune, a tag move or
 * removal, an OCI manifest or blob delete, gc and its compaction — fails with
 * ENOSPC / SQLITE_FULL, which is then retried once. Pushes never use it: a
 * push on a full disk fails with STORAGE_FULL (507) and commits nothing.
 */
import { closeSync, openSync, statfsSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { isDiskFull } from '../errors.js';

export class DiskReserve {
  constructor(
    readonly path: string,
    readonly bytes: number,
  ) {}

  /** Bytes the reserve holds now. */
  held(): number {
    try {
      return statSync(this.path).size;
    } catch {
      return 0;
    }
  }

  /**
   * Makes the reserve whole, if the filesystem has room for it and as much
   * again to spare (a reserve that takes the last free bytes would only fail
   * the next push). Returns whether it is whole.
   */
  refill(): boolean {
    if (this.bytes === 0) return true;
    const have = this.held();
    if (have >= this.bytes) return true;
    try {
      const fs = statfsSync(this.path.replace(/[^/]+$/, '') || '.');
      if (fs.bavail * fs.bsize < 2 * (this.bytes - have)) return false;
    } catch {
      return false;
    }
    let fd = -1;
    try {
      fd = openSync(this.path, 'a');
      const zeros = Buffer.alloc(Math.min(1024 * 1024, this.bytes));
      for (let at = have; at < this.bytes; ) {
        const n = Math.min(zeros.byteLength, this.bytes - at);
        writeSync(fd, zeros, 0, n, at);
        at += n;
      }
      return true;
    } catch {
      return false; // a partial reserve still helps
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  }

  /** Gives the reserve's space back to the filesystem; true when there was some. */
  release(): boolean {
    if (this.held() === 0) return false;
    try {
      unlinkSync(this.path);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Runs a deletion; if it fails because the disk is full, releases the
   * reserve and runs it once more. Afterwards, refills the reserve if there is
   * room again (after gc freed space, typically).
   */
  async relieving<T>(fn: () => T | Promise<T>): Promise<T> {
    let out: T;
    try {
      out = await fn();
    } catch (e) {
      if (!isDiskFull(e) || !this.release()) throw e;
      out = await fn();
    }
    this.refill();
    return out;
  }
}

/**
 * A PackDriver in front of another (S3) that keeps the packs this process
 * put as local files, most recently put first, up to `maxBytes`: reads of
 * what a replica just wrote (a push's commit rebuilds and hashes the blob
 * from its chunks right after uploading them; a pull of a fresh snapshot)
 * come from the local disk instead of ranged GETs. A put is hard-linked from
 * the spool file it came from (no copy); a delete removes the local file too.
 * Only a cache: emptied when the store opens, and a missing or short local
 * file is read from the driver instead. What it serves is checked as every
 * read is (record headers, chunk digests).
 */
import { closeSync, fstatSync, linkSync, mkdirSync, openSync, readSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { checkRange, rangePastEnd, type PackDriver, type PackDriverStats, type PackFacts } from './pack-driver.js';

export const DEFAULT_PACK_CACHE_BYTES = 1024 * 1024 * 1024;

export class PackFileCache implements PackDriver {
  readonly location: string;
  /** Pack name -> its size; insertion order is put order (oldest first). */
  private readonly files = new Map<string, number>();
  private bytes = 0;
  /** Reads answered from local files, and their bytes (the inner driver's stats count only its own). */
  localReads = 0;
  localBytes = 0;

  constructor(
    readonly inner: PackDriver,
    private readonly dir: string,
    private readonly maxBytes = DEFAULT_PACK_CACHE_BYTES,
  ) {
    this.location = inner.location;
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
  }

  private path(name: string): string {
    return join(this.dir, `${name}.pack`);
  }

  async put(name: string, file: string, known?: PackFacts): Promise<void> {
    await this.inner.put(name, file, known);
    if (this.maxBytes <= 0) return;
    try {
      const size = statSync(file).size;
      if (size > this.maxBytes) return;
      linkSync(file, this.path(name));
      this.files.set(name, size);
      this.bytes += size;
      while (this.bytes > this.maxBytes) this.drop(this.files.keys().next().value as string);
    } catch {
      /* not cached: reads go to the driver */
    }
  }

  async get(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(name, offset, length);
    const size = this.files.get(name);
    // Past the end: the driver's answer (readers ask ahead and retry with the size it names).
    if (size !== undefined && offset + length > size) throw rangePastEnd(name, offset, length, size);
    if (size !== undefined) {
      try {
        const fd = openSync(this.path(name), 'r');
        try {
          if (fstatSync(fd).size >= offset + length) {
            const buf = Buffer.allocUnsafe(length);
            let at = 0;
            while (at < length) {
              const n = readSync(fd, buf, at, length - at, offset + at);
              if (n === 0) break;
              at += n;
            }
            if (at === length) {
              this.localReads++;
              this.localBytes += length;
              return buf;
            }
          }
        } finally {
          closeSync(fd);
        }
      } catch {
        /* gone or unreadable: from the driver */
      }
      this.drop(name);
    }
    return this.inner.get(name, offset, length);
  }

  async delete(names: string[]): Promise<void> {
    for (const n of names) this.drop(n);
    await this.inner.delete(names);
  }

  list(): AsyncIterable<{ name: string; size: number }> {
    return this.inner.list();
  }

  /** Requests answered, from the driver or from local files (the driver's own: inner.stats()). */
  stats(): PackDriverStats {
    const s = this.inner.stats();
    return { ...s, gets: s.gets + this.localReads, bytesGot: s.bytesGot + this.localBytes };
  }

  private drop(name: string): void {
    const size = this.files.get(name);
    if (size === undefined) return;
    this.files.delete(name);
    this.bytes -= size;
    try {
      unlinkSync(this.path(name));
    } catch {
      /* already gone */
    }
  }

  async close(): Promise<void> {
    for (const n of [...this.files.keys()]) this.drop(n);
    await this.inner.close();
  }
}

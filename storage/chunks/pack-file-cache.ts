/**
 * A PackDriver in front of another (S3) that keeps the packs this process
 * put as local files, most recently put first, up to `maxBytes`: reads of
 * what a replica just wrote (a push's commit rebuilds and hashes the blob
 * from its chunks right after uploading them; a pull of a fresh snapshot)
 * come from the local disk instead of ranged GETs. A put is hard-linked from
 * the spool file it came from (no copy); a delete removes the local file too.
 *
 * Reads the caller will make again (ReadHint.keep: records read at random,
 * the dictionaries of delta encoding) are kept too, up to `keptBytes`: the
 * ranges read from other packs are written into a sparse local file per pack
 * (`<name>.part`) and served from it when a later read falls inside them,
 * oldest pack dropped first. So a replica's second pull of an update reads
 * its dictionaries from the local disk (the page cache), and they take no
 * room in the process's memory (they were up to 64 MiB of its cache budget).
 *
 * Only a cache: emptied when the store opens, and a missing or short local
 * file is read from the driver instead (a write that fails, a full disk,
 * only means a range is not kept). What it serves is checked as every read
 * is (record headers, chunk digests).
 */
import { closeSync, fstatSync, linkSync, mkdirSync, openSync, readSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { checkRange, rangePastEnd, type PackDriver, type PackDriverStats, type PackFacts, type ReadHint } from './pack-driver.js';
import { KeptRanges, PartFiles } from './kept-ranges.js';

export const DEFAULT_PACK_CACHE_BYTES = 1024 * 1024 * 1024;
/** Bytes of kept reads (ReadHint.keep) on the local disk at most. */
export const DEFAULT_KEPT_BYTES = 512 * 1024 * 1024;

export class PackFileCache implements PackDriver {
  readonly location: string;
  /** Pack name -> its size; insertion order is put order (oldest first). */
  private readonly files = new Map<string, number>();
  private bytes = 0;
  /** Reads answered from local files, and their bytes (the inner driver's stats count only its own). */
  localReads = 0;
  localBytes = 0;
  /** Ranges of other packs kept on the local disk (`<name>.part`), least recently used first. */
  private readonly kept: KeptRanges;
  private readonly parts: PartFiles;

  constructor(
    readonly inner: PackDriver,
    private readonly dir: string,
    private readonly maxBytes = DEFAULT_PACK_CACHE_BYTES,
    keptBytes = DEFAULT_KEPT_BYTES,
  ) {
    this.kept = new KeptRanges(keptBytes, (name) => this.parts.remove(name));
    this.parts = new PartFiles(dir, (name, start, end) => this.kept.add(name, start, end), (name) => this.kept.drop(name));
    this.location = inner.location;
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
  }

  private path(name: string): string {
    return join(this.dir, `${name}.pack`);
  }

  /** Whether reads with ReadHint.keep are kept (the caller then need not keep them in memory). */
  get keepsReads(): boolean {
    return this.kept.maxBytes > 0;
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

  async get(name: string, offset: number, length: number, hint?: ReadHint): Promise<Buffer> {
    checkRange(name, offset, length);
    const size = this.files.get(name);
    // Past the end: the driver's answer (readers ask ahead and retry with the size it names).
    if (size !== undefined && offset + length > size) throw rangePastEnd(name, offset, length, size);
    if (size !== undefined) {
      const buf = this.readLocal(this.path(name), offset, length);
      if (buf) return buf;
      this.drop(name);
    } else if (length > 0 && this.kept.covers(name, offset, offset + length)) {
      const buf = await this.parts.read(name, offset, length);
      if (buf) {
        this.localReads++;
        this.localBytes += length;
        return buf;
      }
      this.kept.drop(name);
    }
    const buf = await this.inner.get(name, offset, length, hint);
    if (hint?.keep && length > 0 && this.kept.fits(length)) this.parts.write(name, offset, buf);
    return buf;
  }

  /** Whether [offset, offset + length) of a pack is on the local disk (a whole pack put here, or kept reads). */
  holds(name: string, offset: number, length: number): boolean {
    const size = this.files.get(name);
    if (size !== undefined) return offset + length <= size;
    return this.kept.has(name, offset, offset + length);
  }

  /** `length` bytes at `offset` of a local file; null when it is gone or shorter. */
  private readLocal(path: string, offset: number, length: number): Buffer | null {
    try {
      const fd = openSync(path, 'r');
      try {
        if (fstatSync(fd).size < offset + length) return null;
        const buf = Buffer.allocUnsafe(length);
        let at = 0;
        while (at < length) {
          const n = readSync(fd, buf, at, length - at, offset + at);
          if (n === 0) return null;
          at += n;
        }
        this.localReads++;
        this.localBytes += length;
        return buf;
      } finally {
        closeSync(fd);
      }
    } catch {
      return null; // gone or unreadable: from the driver
    }
  }

  private unlink(path: string): void {
    try {
      unlinkSync(path);
    } catch {
      /* already gone */
    }
  }

  async delete(names: string[]): Promise<void> {
    for (const n of names) {
      this.drop(n);
      this.kept.drop(n);
      this.parts.remove(n); // a write of it still under way too: its range is never counted
    }
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
    this.unlink(this.path(name));
  }

  async close(): Promise<void> {
    for (const n of [...this.files.keys()]) this.drop(n);
    this.kept.clear();
    this.parts.removeAll();
    await this.inner.close();
  }
}

import { constants } from 'node:fs';
import { copyFile, link, mkdir, open, readdir, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { SnapyardError, storageFailure } from '../errors.js';
import {
  checkPackName, checkRange, emptyStats, packExists, packMissing, rangePastEnd, PACK_SUFFIX,
  type PackDriver, type PackDriverStats,
} from './pack-driver.js';

export interface LocalPackDriverOptions {
  /** The directory of the packs (created if missing). */
  dir: string;
  /** Open packs kept for reads (least recently used closed first). Default 32. */
  openFiles?: number;
}

interface OpenPack {
  fh: FileHandle;
  size: number;
  users: number;
  /** Deleted or evicted: closed when the last reader is done. */
  retired: boolean;
}

/**
 * Packs as files `<dir>/<name>.pack`. A put copies the file to a temporary
 * name in the directory (a reflink where the filesystem can), fsyncs it, checks
 * its size against the source, and links it to its name: link() never replaces,
 * so an existing pack is a CONFLICT and a reader never sees a partial pack. The
 * directory is fsync'ed after puts and deletes. Reads are positioned reads on
 * file handles kept in a small cache.
 */
export class LocalPackDriver implements PackDriver {
  readonly location: string;
  private readonly dir: string;
  private readonly maxOpen: number;
  private readonly cache = new Map<string, OpenPack>();
  private readonly opening = new Map<string, Promise<OpenPack>>();
  private readonly counts: PackDriverStats = emptyStats();
  private ready: Promise<void> | undefined;

  constructor(opts: LocalPackDriverOptions) {
    this.dir = resolve(opts.dir);
    this.maxOpen = opts.openFiles ?? 32;
    this.location = `file:${this.dir}`;
  }

  private pathOf(name: string): string {
    return join(this.dir, name + PACK_SUFFIX);
  }

  private ensureDir(): Promise<void> {
    this.ready ??= mkdir(this.dir, { recursive: true }).then(() => undefined);
    return this.ready;
  }

  private async syncDir(): Promise<void> {
    const d = await open(this.dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  }

  async put(name: string, file: string): Promise<void> {
    checkPackName(name);
    await this.ensureDir();
    const tmp = join(this.dir, `.tmp-${name}-${randomBytes(6).toString('hex')}`);
    try {
      const source = await stat(file);
      await copyFile(file, tmp, constants.COPYFILE_FICLONE);
      const fh = await open(tmp, 'r+');
      let size: number;
      try {
        await fh.sync();
        size = (await fh.stat()).size;
      } finally {
        await fh.close();
      }
      if (size !== source.size) {
        throw new SnapyardError('SIZE_INVALID', `pack ${name}: copied ${size} bytes of ${file}, which has ${source.size} (changed while stored?)`);
      }
      try {
        await link(tmp, this.pathOf(name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw packExists(name, this.location);
        throw e;
      }
      await this.syncDir();
      this.counts.puts++;
      this.counts.bytesPut += size;
    } catch (e) {
      throw storageFailure(e) ?? e;
    } finally {
      await rm(tmp, { force: true });
    }
  }

  private acquire(name: string): Promise<OpenPack> {
    const hit = this.cache.get(name);
    if (hit) {
      hit.users++;
      this.cache.delete(name); // re-insert: most recently used last
      this.cache.set(name, hit);
      return Promise.resolve(hit);
    }
    let pending = this.opening.get(name);
    if (!pending) {
      pending = (async () => {
        let fh: FileHandle;
        try {
          fh = await open(this.pathOf(name), 'r');
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw packMissing(name, this.location, e);
          throw e;
        }
        const entry: OpenPack = { fh, size: (await fh.stat()).size, users: 0, retired: false };
        this.cache.set(name, entry);
        return entry;
      })().finally(() => this.opening.delete(name));
      this.opening.set(name, pending);
    }
    return pending.then((entry) => {
      entry.users++;
      this.evict();
      return entry;
    });
  }

  private async release(entry: OpenPack): Promise<void> {
    entry.users--;
    if (entry.retired && entry.users === 0) await entry.fh.close();
  }

  /** Closes the least recently used idle handles beyond the limit (busy ones stay until released). */
  private evict(): void {
    for (const [name, entry] of this.cache) {
      if (this.cache.size <= this.maxOpen) break;
      if (entry.users > 0) continue;
      this.retire(name, entry);
    }
  }

  private retire(name: string, entry: OpenPack): void {
    this.cache.delete(name);
    entry.retired = true;
    if (entry.users === 0) void entry.fh.close().catch(() => {});
  }

  async get(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(name, offset, length);
    const entry = await this.acquire(name);
    try {
      if (offset + length > entry.size) throw rangePastEnd(name, offset, length, entry.size);
      const buf = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await entry.fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) throw rangePastEnd(name, offset, length, offset + done);
        done += bytesRead;
      }
      this.counts.gets++;
      this.counts.bytesGot += length;
      return buf;
    } finally {
      await this.release(entry);
    }
  }

  async delete(names: string[]): Promise<void> {
    for (const name of names) checkPackName(name);
    for (const name of names) {
      const entry = this.cache.get(name);
      if (entry) this.retire(name, entry);
      try {
        await unlink(this.pathOf(name));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      this.counts.deletes++;
    }
    if (names.length > 0) await this.syncDir().catch((e: NodeJS.ErrnoException) => { if (e.code !== 'ENOENT') throw e; });
  }

  async *list(): AsyncIterable<{ name: string; size: number }> {
    let entries: string[];
    try {
      entries = await readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') entries = [];
      else throw e;
    }
    this.counts.lists++;
    for (const file of entries.sort()) {
      if (!file.endsWith(PACK_SUFFIX) || file.startsWith('.')) continue;
      let size: number;
      try {
        size = (await stat(join(this.dir, file))).size;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted meanwhile
        throw e;
      }
      yield { name: file.slice(0, -PACK_SUFFIX.length), size };
    }
  }

  stats(): PackDriverStats {
    return { ...this.counts };
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.opening.values()]);
    for (const [name, entry] of [...this.cache]) this.retire(name, entry);
  }
}

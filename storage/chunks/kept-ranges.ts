import { readSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';

/** Packs with kept ranges at most (each has a file open). */
const MAX_PACKS = 256;

/**
 * Which byte ranges of which packs a local cache holds (pack-file-cache.ts's
 * part files), within a byte budget: packs in least recently used order, each
 * with its ranges sorted and merged. Dropping a pack calls `onDrop` (which
 * removes its file). Memory: two numbers per disjoint range.
 */
export class KeptRanges {
  /** Pack -> [start0, end0, start1, end1, ...] sorted, disjoint, not touching; Map order is use order (oldest first). */
  private readonly packs = new Map<string, number[]>();
  private bytes = 0;

  constructor(
    readonly maxBytes: number,
    private readonly onDrop: (name: string) => void,
  ) {}

  /** Bytes held. */
  get heldBytes(): number {
    return this.bytes;
  }

  /** Whether a range of `length` bytes may be kept at all. */
  fits(length: number): boolean {
    return length <= this.maxBytes / 4;
  }

  /** Whether [start, end) of `name` is all held. */
  has(name: string, start: number, end: number): boolean {
    const r = this.packs.get(name);
    if (!r) return false;
    const i = lastStartAtOrBefore(r, start);
    return i >= 0 && r[i + 1]! >= end;
  }

  /** has(), and a hit makes the pack the most recently used. */
  covers(name: string, start: number, end: number): boolean {
    if (!this.has(name, start, end)) return false;
    const r = this.packs.get(name)!;
    this.packs.delete(name);
    this.packs.set(name, r);
    return true;
  }

  /** Notes [start, end) of `name` as held (merged with the ranges it overlaps or touches); drops the oldest packs beyond the budget. */
  add(name: string, start: number, end: number): void {
    if (end <= start) return;
    const r = this.packs.get(name) ?? [];
    this.packs.delete(name);
    // The ranges that overlap or touch [start, end): from i (the last starting at or before start, if it reaches start) to j.
    let i = lastStartAtOrBefore(r, start);
    if (i < 0 || r[i + 1]! < start) i += 2;
    let j = i;
    let lo = start;
    let hi = end;
    let removed = 0;
    while (j < r.length && r[j]! <= end) {
      lo = Math.min(lo, r[j]!);
      hi = Math.max(hi, r[j + 1]!);
      removed += r[j + 1]! - r[j]!;
      j += 2;
    }
    r.splice(i, j - i, lo, hi);
    this.bytes += hi - lo - removed;
    this.packs.set(name, r);
    while ((this.bytes > this.maxBytes || this.packs.size > MAX_PACKS) && this.packs.size > 0) this.drop(this.packs.keys().next().value as string);
  }

  /** Forgets a pack's ranges (and removes its file). */
  drop(name: string): void {
    const r = this.packs.get(name);
    if (!r) return;
    this.packs.delete(name);
    for (let k = 0; k < r.length; k += 2) this.bytes -= r[k + 1]! - r[k]!;
    this.onDrop(name);
  }

  clear(): void {
    for (const name of [...this.packs.keys()]) this.drop(name);
  }
}

/** Index (even) of the last range whose start is <= at; -2 when none. */
function lastStartAtOrBefore(r: number[], at: number): number {
  let lo = 0;
  let hi = r.length / 2 - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (r[mid * 2]! <= at) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found * 2;
}

/** Pending writes beyond which further ranges are not kept (the disk is slower than the reads). */
const MAX_PENDING_BYTES = 16 * 1024 * 1024;

/**
 * The sparse local files that hold kept ranges (`<dir>/<pack>.part`), written
 * and read on libuv's threads (not the event loop: a disk writing back can
 * take a second per write). A range is reported written (`onWritten`) only
 * once all its bytes are in the file; a write that fails drops the pack's
 * ranges (`onFailed`: a full disk only means nothing more is kept).
 * With `unlinked`, each file is removed as soon as it is opened: it lives as
 * long as this process holds it open (a kill -9 leaves nothing behind).
 */
export class PartFiles {
  private readonly handles = new Map<string, Promise<FileHandle>>();
  /** The handles opened (for readNow), while they are in `handles`. */
  private readonly opened = new Map<string, FileHandle>();
  private pendingBytes = 0;
  private readonly writing = new Set<Promise<void>>();

  constructor(
    private readonly dir: string,
    private readonly onWritten: (name: string, start: number, end: number) => void,
    private readonly onFailed: (name: string) => void,
    private readonly opts: { unlinked?: boolean } = {},
  ) {}

  private handle(name: string): Promise<FileHandle> {
    let h = this.handles.get(name);
    if (!h) {
      // Positioned writes and reads ('a' would append); opened once per pack and kept (a new one after remove()).
      const path = join(this.dir, `${name}.part`);
      const opening: Promise<FileHandle> = open(path, 'w+').then(async (fh) => {
        if (this.opts.unlinked) await rm(path, { force: true });
        if (this.handles.get(name) === opening) this.opened.set(name, fh);
        return fh;
      });
      h = opening;
      h.catch(() => this.handles.delete(name));
      this.handles.set(name, h);
    }
    return h;
  }

  /** Starts writing `buf` at `offset` of the pack's file (skipped while too much is pending). */
  write(name: string, offset: number, buf: Buffer): void {
    if (this.pendingBytes + buf.byteLength > MAX_PENDING_BYTES) return;
    this.pendingBytes += buf.byteLength;
    const writing = (async () => {
      const h = this.handle(name);
      try {
        const fh = await h;
        for (let at = 0; at < buf.byteLength; ) {
          const { bytesWritten } = await fh.write(buf, at, buf.byteLength - at, offset + at);
          if (bytesWritten === 0) throw new Error('no progress');
          at += bytesWritten;
        }
        // Not if the file was removed meanwhile (dropped, maybe opened anew: these bytes are not in that one).
        if (this.handles.get(name) === h) this.onWritten(name, offset, offset + buf.byteLength);
      } catch {
        if (this.handles.get(name) === h) this.onFailed(name);
      } finally {
        this.pendingBytes -= buf.byteLength;
      }
    })();
    this.writing.add(writing);
    void writing.finally(() => this.writing.delete(writing));
  }

  /** Resolves once the writes started so far are done (written and reported, or failed). */
  async settled(): Promise<void> {
    await Promise.all([...this.writing]);
  }

  /** `length` bytes at `offset` (a range reported written), in `into` when given; null when the file is gone or short. */
  async read(name: string, offset: number, length: number, into?: Buffer): Promise<Buffer | null> {
    const h = this.handles.get(name);
    if (!h) return null;
    try {
      const fh = await h;
      const buf = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
      for (let at = 0; at < length; ) {
        const { bytesRead } = await fh.read(buf, at, length - at, offset + at);
        if (bytesRead === 0) return null;
        at += bytesRead;
      }
      return buf;
    } catch {
      return null;
    }
  }

  /**
   * read() on the event loop's own thread: for small reads of bytes this
   * process just wrote (in the page cache), cheaper than a trip to libuv's
   * threads and back. Null when the file is not open (or gone, or short).
   */
  readNow(name: string, offset: number, into: Buffer): Buffer | null {
    const fh = this.opened.get(name);
    if (!fh) return null;
    try {
      for (let at = 0; at < into.byteLength; ) {
        const n = readSync(fh.fd, into, at, into.byteLength - at, offset + at);
        if (n === 0) return null;
        at += n;
      }
      return into;
    } catch {
      return null;
    }
  }

  /** Closes and removes every file. */
  removeAll(): void {
    for (const name of [...this.handles.keys()]) this.remove(name);
  }

  /** Closes and removes the pack's file (reads in flight finish first: FileHandle.close waits for them); a write under way is then not reported. */
  remove(name: string): void {
    const h = this.handles.get(name);
    if (!h) return;
    this.handles.delete(name);
    this.opened.delete(name);
    const path = join(this.dir, `${name}.part`);
    void (async () => {
      await (await h.catch(() => null))?.close().catch(() => {});
      await rm(path, { force: true });
    })();
  }
}

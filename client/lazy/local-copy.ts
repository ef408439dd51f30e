/**
 * What a lazy mount has answered, kept as plain bytes in one local sparse
 * file (the guest view's bytes at their own offsets), so that a range the
 * guest reads again (a guest with little memory re-reads its disk all the
 * time; a reboot reads the same set) is one positioned read of local bytes:
 * no chunk lookup, no decompression (the node cache keeps chunks
 * zstd-compressed), as Nydus's blob cache keeps what it fetched uncompressed.
 *
 * - Only bytes already verified and answered go in; a range counts only once
 *   all its bytes are written (storage/chunks/kept-ranges.ts).
 * - The file is removed as soon as it is opened: it is this process's alone
 *   and lives only while the mount runs (kill -9 leaves nothing behind on
 *   the cache's disk).
 * - At most `maxBytes` of ranges (beyond that nothing more is kept); a write
 *   that fails (a full disk) drops the copy, and reads go back to the cache.
 * Memory: two numbers per disjoint range, and the bytes of writes under way
 * (at most 16 MiB: more are not kept).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { KeptRanges, PartFiles } from '../../storage/chunks/kept-ranges.js';

/** Reads up to this size are made on the event loop's thread (LocalCopy.read). */
const SYNC_BYTES = 1024 * 1024;

export class LocalCopy {
  private readonly ranges: KeptRanges;
  private readonly files: PartFiles;
  private readonly name = `${process.pid}-${randomBytes(6).toString('hex')}`;
  /** Reads answered from the copy. */
  reads = 0;
  /** A write failed: nothing more is kept. */
  private failed = false;

  constructor(dir: string, readonly maxBytes: number) {
    mkdirSync(dir, { recursive: true });
    // The budget is checked before each write (keep()): KeptRanges' own would drop the whole copy.
    this.ranges = new KeptRanges(Number.MAX_SAFE_INTEGER, (name) => this.files.remove(name));
    this.files = new PartFiles(dir, (name, start, end) => this.ranges.add(name, start, end), (name) => {
      this.failed = true;
      this.ranges.drop(name);
    }, { unlinked: true });
  }

  /** Bytes held. */
  get bytes(): number {
    return this.ranges.heldBytes;
  }

  /** Whether [offset, end) is all held. */
  has(offset: number, end: number): boolean {
    return this.ranges.has(this.name, offset, end);
  }

  /**
   * Reads [offset, offset + out.length) into `out`; false when it is not (or
   * no longer) all held. Up to SYNC_BYTES on the event loop's thread (bytes
   * this process wrote moments ago are in the page cache: a copy, cheaper
   * than a trip to libuv's threads), larger reads on libuv's threads.
   */
  async read(offset: number, out: Buffer): Promise<boolean> {
    if (!this.has(offset, offset + out.byteLength)) return false;
    const got = out.byteLength <= SYNC_BYTES ? this.files.readNow(this.name, offset, out) : await this.files.read(this.name, offset, out.byteLength, out);
    if (got === null) return false;
    this.reads++;
    return true;
  }

  /** Starts writing a copy of `bytes` (verified, as answered) at `offset`; skipped beyond the budget. */
  keep(offset: number, bytes: Buffer): void {
    if (this.failed || bytes.byteLength === 0 || this.has(offset, offset + bytes.byteLength)) return;
    if (this.ranges.heldBytes + bytes.byteLength > this.maxBytes) return;
    this.files.write(this.name, offset, Buffer.from(bytes));
  }

  /** Resolves once the copies started so far are written (or failed). */
  settled(): Promise<void> {
    return this.files.settled();
  }

  /** Closes (and so frees) the file. */
  close(): void {
    this.ranges.clear();
    this.files.removeAll();
  }
}

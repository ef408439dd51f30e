/**
 * The spool of a RemoteChunkStore: segment files in a local directory where
 * new chunk records are appended (the record format of pack-files.ts, so a
 * segment is a pack as it is) until the segment is sealed and put whole to the
 * pack driver. A segment is `<spoolDir>/<name>.seg`; its pack name is given when
 * it is sealed: `r-<writerId>-<time>-<sequence>` (time in ms, base 36: when the
 * segment was sealed, so compaction can tell a pack just put by another
 * replica, whose rows may not be committed yet), unique per writer.
 *
 * Records are written with positioned writes, a batch at a time (no segment
 * is held in memory). Until its rows are committed to the catalog, a chunk is
 * read from its segment file; a segment removed while a read is under way
 * stays readable through the descriptor, which closes when the last read is
 * done.
 *
 * The directory belongs to one store: files left by a crash hold chunks that
 * were never recorded (a catalog row is committed only after its pack is put),
 * so opening the spool deletes every segment in it.
 */
import { closeSync, mkdirSync, openSync, readdirSync, readSync, unlinkSync, write } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ChunkCorruptError, isSnapyardError, SnapyardError } from '../errors.js';
import type { PackDriver, PackFacts } from './pack-driver.js';
import { localDigester, sha256, type Digest, type StreamDigester } from '../digest.js';
import type { NewCatalogEntry } from './chunk-catalog.js';
import { ChunkCodec } from './chunk-codec.js';
import { RECORD_HEADER_SIZE, writeRecordHeader } from './pack-files.js';

export const SEGMENT_SUFFIX = '.seg';

/** Appended bytes a writer lets wait for the disk before it waits too (Segments.drain). */
export const SPOOL_UNWRITTEN_BYTES = 8 * 1024 * 1024;

/** What a writer id may be: it goes into pack names (pack-files.ts PACK_NAME and pack-driver.ts PACK_DRIVER_NAME). */
export const WRITER_ID = /^[a-z0-9][a-z0-9-]{0,31}$/;

export function defaultWriterId(): string {
  return `${process.pid.toString(36)}${randomBytes(4).toString('hex')}`;
}

/** A segment file being written or waiting to be put. */
export class SpoolSegment {
  /** Rows of the records appended (what the catalog commit records once the segment is put). */
  readonly rows: NewCatalogEntry[] = [];
  size = 0;
  sealed = false;
  /** MD5 of the bytes appended (the S3 put's Content-MD5, computed as they are written): on a worker where the spool has one. */
  private readonly hash: StreamDigester;
  private md5: Promise<Buffer> | null = null;
  private fd: number;
  private readers = 0;
  private removed = false;
  /**
   * Writes under way (on libuv's threads: a disk writing back held the event
   * loop in writeSync for seconds of a push) and the bytes they hold; the
   * first one's failure (a full disk) is kept for written().
   */
  private readonly writes = new Set<Promise<void>>();
  private writingBytes = 0;
  private writeError: Error | null = null;

  constructor(
    /** The pack name it is put under (changed if the driver already holds one of that name). */
    public name: string,
    readonly path: string,
    md5?: StreamDigester | null,
  ) {
    this.hash = md5 ?? localDigester('md5');
    this.fd = openSync(path, 'wx+');
  }

  /**
   * Appends records laid end to end in `buf` (not to be changed until
   * written() resolves); answers the offset of the first.
   */
  append(buf: Uint8Array): number {
    if (this.sealed) throw new SnapyardError('INTERNAL', `segment ${this.name} is sealed`);
    if (this.writeError) throw this.writeError;
    const at = this.size;
    // The digester copies what it keeps before this returns; the promise it may answer is its backlog.
    const hashing = this.hash.update(buf);
    this.size += buf.byteLength;
    this.writingBytes += buf.byteLength;
    const w = Promise.all([writeAll(this.fd, buf, at), hashing]).then(
      () => {},
      (e: unknown) => {
        this.writeError ??= e instanceof Error ? e : new Error(String(e));
      },
    ).finally(() => {
      this.writes.delete(w);
      this.writingBytes -= buf.byteLength;
      this.closeIfDone();
    });
    this.writes.add(w);
    return at;
  }

  /** Bytes appended and not yet written. */
  get unwritten(): number {
    return this.writingBytes;
  }

  /** Resolves once everything appended so far is written; rejects with the first write's failure. */
  async written(): Promise<void> {
    while (this.writes.size > 0) await Promise.all([...this.writes]);
    if (this.writeError) throw this.writeError;
  }

  /**
   * Nothing is appended after this. Not fsync'ed: a segment is durable once
   * its pack is put and its rows committed, and a spool left by a crash is
   * deleted at the next start, so the spool's bytes never need to outlive the
   * process (and an fsync here held the event loop while the disk wrote back:
   * about 50 MB a segment).
   */
  seal(): void {
    if (this.sealed) return;
    this.md5 = this.hash.digest().then((d) => Buffer.from(String(d).slice('md5:'.length), 'hex'));
    this.md5.catch(() => {}); // reported by facts()
    this.sealed = true;
  }

  /** Its MD5 and size, once sealed. */
  async facts(): Promise<PackFacts> {
    if (!this.md5) throw new SnapyardError('INTERNAL', `segment ${this.name} is not sealed`);
    return { md5: await this.md5, size: this.size };
  }

  /** `length` bytes at `offset` (a record, header included), once written. */
  async read(offset: number, length: number): Promise<Buffer> {
    if (this.fd < 0) throw new SnapyardError('INTERNAL', `segment ${this.name} is closed`);
    this.readers++;
    try {
      await this.written();
      const out = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const n = readSync(this.fd, out, got, length - got, offset + got);
        if (n === 0) throw new SnapyardError('INTERNAL', `segment ${this.name} ends before ${offset + length}`);
        got += n;
      }
      return out;
    } finally {
      this.readers--;
      this.closeIfDone();
    }
  }

  /** Deletes the file (its chunks are in the catalog now, or it is abandoned); the descriptor closes once no read or write uses it. */
  remove(): void {
    if (this.removed) return;
    this.removed = true;
    if (!this.md5) this.hash.digest().catch(() => {}); // an abandoned segment: its hash state on the worker goes too
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
    this.closeIfDone();
  }

  private closeIfDone(): void {
    if (this.removed && this.readers === 0 && this.writes.size === 0 && this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}

/** Writes all of `buf` at `position` (positioned writes on libuv's thread pool). */
function writeAll(fd: number, buf: Uint8Array, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number) => {
      if (off >= buf.byteLength) return resolve();
      write(fd, buf, off, buf.byteLength - off, position + off, (e, n) => (e ? reject(e) : step(off + n)));
    };
    step(0);
  });
}

/** Names and opens segments in one directory. */
export class Spool {
  private seq = 0;

  constructor(
    readonly dir: string,
    readonly writerId: string,
    /** Where segments hash their bytes (the store's codec workers); on this thread without it. */
    private readonly md5?: () => StreamDigester | null,
  ) {
    if (!WRITER_ID.test(writerId)) throw new SnapyardError('INVALID_ARGUMENT', `bad writer id ${JSON.stringify(writerId)} (lower-case letters, digits and '-', at most 32)`);
    mkdirSync(dir, { recursive: true });
  }

  /** Deletes the segments a previous run left (chunks never recorded); answers how many. */
  clean(): number {
    let n = 0;
    for (const f of readdirSync(this.dir)) {
      if (!f.endsWith(SEGMENT_SUFFIX)) continue;
      unlinkSync(join(this.dir, f));
      n++;
    }
    return n;
  }

  open(): SpoolSegment {
    const name = this.nextName();
    return new SpoolSegment(name, join(this.dir, name + SEGMENT_SUFFIX), this.md5?.());
  }

  /** A fresh pack name (also used when the driver already holds a pack of the name a segment had). */
  nextName(): string {
    return `r-${this.writerId}-${Date.now().toString(36)}-${(this.seq++).toString(36)}`;
  }
}

/** The writer id and the time (ms) in a pack name nextName() gave; null for other names. */
export function packNameParts(name: string): { writerId: string; timeMs: number } | null {
  const m = /^r-([a-z0-9][a-z0-9-]*)-([0-9a-z]+)-([0-9a-z]+)$/.exec(name);
  return m ? { writerId: m[1]!, timeMs: parseInt(m[2]!, 36) } : null;
}

/** Records laid end to end (headers written) and the stored length of each. */
export interface Records {
  buf: Buffer;
  lengths: number[];
}

/** Chunks encoded (chunk-codec.ts) into records, end to end in one buffer. */
export function encodeRecords(codec: ChunkCodec, chunks: Array<{ digest: Digest; raw: Buffer }>): Records {
  let bound = 0;
  for (const c of chunks) bound += RECORD_HEADER_SIZE + ChunkCodec.bound(c.raw.byteLength);
  const buf = Buffer.allocUnsafeSlow(bound);
  const lengths: number[] = [];
  let at = 0;
  for (const c of chunks) {
    const n = codec.encodeInto(c.raw, buf, at + RECORD_HEADER_SIZE);
    writeRecordHeader(buf, at, c.digest, n);
    lengths.push(n);
    at += RECORD_HEADER_SIZE + n;
  }
  return { buf: buf.subarray(0, at), lengths };
}

/** Throws CHUNK_CORRUPT for the first chunk whose bytes do not hash to its digest (bytes read back from a file that may have changed). */
export function checkNames(chunks: Array<{ digest: Digest; raw: Buffer }>): void {
  for (const c of chunks) {
    const actual = sha256(c.raw);
    if (actual !== c.digest) throw new ChunkCorruptError(c.digest, `content hashes to ${actual}`);
  }
}

/** Stored forms (already encoded) as records, end to end. */
export function storedRecords(chunks: Array<{ digest: Digest; stored: Buffer }>): Records {
  let total = 0;
  for (const c of chunks) total += RECORD_HEADER_SIZE + c.stored.byteLength;
  // One buffer of its own, written once (not a record each, then concatenated).
  const buf = Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (const { digest, stored } of chunks) {
    writeRecordHeader(buf, at, digest, stored.byteLength);
    stored.copy(buf, at + RECORD_HEADER_SIZE);
    at += RECORD_HEADER_SIZE + stored.byteLength;
  }
  return { buf, lengths: chunks.map((c) => c.stored.byteLength) };
}

/** The open segment and the sealed ones waiting for their put and commit. */
export class Segments {
  open: SpoolSegment | null = null;
  /** Oldest first; `put` once the driver holds it. */
  readonly sealed: Array<SpoolSegment & { put?: boolean }> = [];

  constructor(
    private readonly spool: Spool,
    private readonly segmentBytes: number,
  ) {}

  /**
   * Puts the oldest sealed segment to the driver (once). A pack of its name
   * there already is someone else's (a writer id reused): ours goes under
   * another name.
   */
  async putOldest(driver: PackDriver): Promise<SpoolSegment> {
    const seg = this.sealed[0]!;
    if (seg.put) return seg;
    await seg.written();
    try {
      await driver.put(seg.name, seg.path, await seg.facts());
    } catch (e) {
      if (!isSnapyardError(e, 'CONFLICT')) throw e;
      seg.name = this.spool.nextName();
      await driver.put(seg.name, seg.path, await seg.facts());
    }
    seg.put = true;
    return seg;
  }

  /**
   * Appends records to the open segment, sealing it and starting the next
   * when it would pass segmentBytes (a record larger than that gets a segment
   * of its own); `placed` hears where each record went.
   */
  append(items: Array<{ raw32: Buffer; rawLength: number }>, recs: Records, placed: (i: number, seg: SpoolSegment, offset: number, length: number) => void): void {
    const { buf, lengths } = recs;
    let i = 0;
    let at = 0;
    while (i < items.length) {
      if (this.open && this.open.size > 0 && this.open.size + RECORD_HEADER_SIZE + lengths[i]! > this.segmentBytes) this.sealOpen();
      const seg = (this.open ??= this.spool.open());
      let j = i;
      let bytes = 0;
      do bytes += RECORD_HEADER_SIZE + lengths[j++]!;
      while (j < items.length && seg.size + bytes + RECORD_HEADER_SIZE + lengths[j]! <= this.segmentBytes);
      let offset = seg.append(buf.subarray(at, at + bytes));
      for (let k = i; k < j; k++) {
        const length = lengths[k]!;
        seg.rows.push({ raw: items[k]!.raw32, pack: '', offset, length, rawLength: items[k]!.rawLength });
        placed(k, seg, offset, length);
        offset += RECORD_HEADER_SIZE + length;
      }
      at += bytes;
      i = j;
    }
  }

  /**
   * Waits while more than `maxBytes` appended bytes are not written yet (the
   * spool's memory while the disk is slower than the records come). A write's
   * failure is not thrown here: the segment's put reports it.
   */
  async drain(maxBytes = SPOOL_UNWRITTEN_BYTES): Promise<void> {
    for (;;) {
      const segs = [...this.sealed, ...(this.open ? [this.open] : [])].filter((g) => g.unwritten > 0);
      if (segs.reduce((n, g) => n + g.unwritten, 0) <= maxBytes) return;
      await segs[0]!.written().catch(() => {});
    }
  }

  /** Seals the open segment into the queue; an empty one is deleted. */
  sealOpen(): void {
    const seg = this.open;
    this.open = null;
    if (!seg) return;
    if (seg.size === 0) return seg.remove();
    seg.seal();
    seg.name = this.spool.nextName();
    this.sealed.push(seg);
  }

  /** Deletes every segment file (close: what was not put is never recorded). */
  discard(): void {
    for (const seg of this.sealed.splice(0)) seg.remove();
    this.open?.remove();
    this.open = null;
  }
}

import { closeSync, fsync, fsyncSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ChunkCodec } from './chunk-codec.js';
import { ChunkCorruptError } from '../errors.js';
import { hexOf, type Digest } from '../digest.js';

/**
 * On-disk layout of a local chunk store (the one place it is written down):
 *
 *   <root>/index.db           SQLite: chunk digest -> (pack, offset, length); see pack-index.ts
 *   <root>/packs/<name>.pack  append-only files of chunk records
 *
 * A chunk record is
 *
 *   offset size  field
 *   0      4     magic "SYR1"
 *   4      32    sha256 of the chunk's raw bytes
 *   36     4     length L of the stored chunk, u32 little-endian
 *   40     L     the stored chunk (chunk-codec.ts: header + raw or zstd payload)
 *
 * Records are only ever appended, and a chunk becomes visible only when its
 * index row is committed, after the record is written; so a crash leaves at
 * most unindexed bytes at the end of a pack (dead space, and recoverable by
 * scanning: every record names its chunk). Packs are fsync'ed before the blob
 * that needs them is committed (ChunkStore.flush). Dead space (records of
 * removed chunks, duplicates from racing writers) is reclaimed by compaction.
 * Packs grow to PACK_MAX bytes, then a new one is started.
 */
export const RECORD_MAGIC = 0x31525953; // "SYR1"
export const RECORD_HEADER_SIZE = 40;
export const PACK_MAX = 256 * 1024 * 1024;

export function packDir(root: string): string {
  return join(root, 'packs');
}

export const PACK_NAME = /^[a-z0-9-]{4,64}$/;

export function packPath(root: string, name: string): string {
  if (!PACK_NAME.test(name)) throw new Error(`bad pack name ${JSON.stringify(name)}`);
  return join(packDir(root), `${name}.pack`);
}

export function ensureLayout(root: string): void {
  mkdirSync(packDir(root), { recursive: true });
}

export interface RecordLocation {
  pack: string;
  /** Offset of the record (its header). */
  offset: number;
  /** Length of the stored chunk (after the record header). */
  length: number;
}

/** Appends records to one pack at a time; owned by one thread. */
export class PackWriter {
  private fd = -1;
  private name = '';
  private size = 0;
  private readonly dirty = new Map<string, number>();
  private retired: number[] = [];
  private unsynced = 0;
  private readonly background: Array<Promise<void>> = [];

  constructor(
    private readonly root: string,
    private readonly prefix: string,
    private readonly max = PACK_MAX,
    /** Start an fsync in the background after this many bytes, so the final sync has little left to do. */
    private readonly syncEvery = 64 * 1024 * 1024,
  ) {}

  append(digest: Digest, stored: Buffer): RecordLocation {
    const record = Buffer.allocUnsafe(RECORD_HEADER_SIZE + stored.byteLength);
    writeRecordHeader(record, 0, digest, stored.byteLength);
    stored.copy(record, RECORD_HEADER_SIZE);
    return this.appendRecords(record, [stored.byteLength])[0]!;
  }

  /**
   * Appends records already laid end to end in `buf` (headers written with
   * writeRecordHeader), with one write; `lengths` are their stored lengths.
   */
  appendRecords(buf: Buffer, lengths: number[]): RecordLocation[] {
    const total = buf.byteLength;
    if (this.fd < 0 || (this.size > 0 && this.size + total > this.max)) this.rotate();
    const locs: RecordLocation[] = [];
    let at = 0;
    for (const length of lengths) {
      locs.push({ pack: this.name, offset: this.size + at, length });
      at += RECORD_HEADER_SIZE + length;
    }
    writeAll(this.fd, buf, this.size);
    this.size += total;
    this.dirty.set(this.name, this.fd);
    this.unsynced += total;
    if (this.unsynced >= this.syncEvery) {
      this.unsynced = 0;
      const fd = this.fd;
      this.background.push(new Promise<void>((resolve, reject) => fsync(fd, (e) => (e ? reject(e) : resolve()))));
    }
    return locs;
  }

  /** fsyncs every pack written since the last sync. */
  async sync(): Promise<void> {
    await Promise.all(this.background.splice(0));
    this.syncNow();
  }

  private syncNow(): void {
    for (const fd of this.dirty.values()) fsyncSync(fd);
    this.dirty.clear();
    this.unsynced = 0;
    for (const fd of this.retired) closeSync(fd);
    this.retired = [];
  }

  private rotate(): void {
    if (this.fd >= 0) {
      if (this.dirty.has(this.name)) this.retired.push(this.fd);
      else closeSync(this.fd);
    }
    this.name = `${this.prefix}-${Date.now().toString(36)}-${randomBytes(6).toString('hex')}`;
    this.fd = openSync(packPath(this.root, this.name), 'wx');
    this.size = 0;
  }

  /**
   * fsyncs and closes the current pack, so the next append starts a new one:
   * after this, no pack this writer wrote to is appended to again (compaction
   * only rewrites sealed packs).
   */
  async seal(): Promise<void> {
    await this.sync();
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    this.size = 0;
  }

  async close(): Promise<void> {
    await this.seal();
  }
}

export function writeRecordHeader(out: Buffer, at: number, digest: Digest, storedLength: number): void {
  out.writeUInt32LE(RECORD_MAGIC, at);
  out.write(hexOf(digest), at + 4, 'hex');
  out.writeUInt32LE(storedLength, at + 36);
}

function writeAll(fd: number, buf: Buffer, position: number): void {
  let off = 0;
  while (off < buf.byteLength) off += writeSync(fd, buf, off, buf.byteLength - off, position + off);
}

/** Reads records from packs, keeping a few packs open. Owned by one thread. */
export class PackReader {
  private readonly fds = new Map<string, number>();

  constructor(
    private readonly root: string,
    private readonly maxOpen = 64,
  ) {}

  private scratch = Buffer.allocUnsafeSlow(0);

  /**
   * The stored chunk of a record, header checked against the digest. With
   * `reuse`, the bytes are in a scratch buffer valid until the next read.
   */
  readStored(digest: Digest, loc: RecordLocation, reuse = false): Buffer {
    let fd: number;
    try {
      fd = this.open(loc.pack);
    } catch (e) {
      throw new ChunkCorruptError(digest, `pack ${loc.pack}: ${(e as Error).message}`);
    }
    const need = RECORD_HEADER_SIZE + loc.length;
    let buf: Buffer;
    if (reuse) {
      if (this.scratch.byteLength < need) this.scratch = Buffer.allocUnsafeSlow(Math.max(need, 512 * 1024));
      buf = this.scratch.subarray(0, need);
    } else {
      buf = Buffer.allocUnsafe(need);
    }
    let got = 0;
    while (got < buf.byteLength) {
      const n = readSync(fd, buf, got, buf.byteLength - got, loc.offset + got);
      if (n === 0) throw new ChunkCorruptError(digest, `pack ${loc.pack} ends before the record at ${loc.offset}`);
      got += n;
    }
    if (buf.readUInt32LE(0) !== RECORD_MAGIC || buf.toString('hex', 4, 36) !== hexOf(digest) || buf.readUInt32LE(36) !== loc.length) {
      throw new ChunkCorruptError(digest, `record header at ${loc.pack}:${loc.offset} does not match`);
    }
    return buf.subarray(RECORD_HEADER_SIZE);
  }

  /** The raw chunk, checked as codec.decodeRead() checks a read (`full`: its digest, as `verify` does). */
  readRaw(codec: ChunkCodec, digest: Digest, loc: RecordLocation, full = false): Buffer {
    const stored = this.readStored(digest, loc);
    return full ? codec.decode(stored, digest) : codec.decodeRead(stored, digest);
  }

  private open(pack: string): number {
    let fd = this.fds.get(pack);
    if (fd !== undefined) {
      this.fds.delete(pack);
      this.fds.set(pack, fd);
      return fd;
    }
    fd = openSync(packPath(this.root, pack), 'r');
    this.fds.set(pack, fd);
    while (this.fds.size > this.maxOpen) {
      const [oldest, ofd] = this.fds.entries().next().value as [string, number];
      this.fds.delete(oldest);
      closeSync(ofd);
    }
    return fd;
  }

  /** Forget an open pack (after it was rewritten or removed). */
  drop(pack: string): void {
    const fd = this.fds.get(pack);
    if (fd !== undefined) closeSync(fd);
    this.fds.delete(pack);
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/** Reads, decodes and checks (codec.decodeRead) a run of chunks into one buffer of its own (transferable). */
export function readConcat(reader: PackReader, codec: ChunkCodec, digests: Digest[], locs: RecordLocation[], lengths: number[], into?: Buffer): Buffer {
  let total = 0;
  for (const l of lengths) total += l;
  const out = into && into.byteLength >= total ? into.subarray(0, total) : Buffer.allocUnsafeSlow(total);
  let at = 0;
  for (let i = 0; i < digests.length; i++) {
    const d = digests[i]!;
    const raw = codec.decodeRead(reader.readStored(d, locs[i]!, true), d, out, at);
    if (raw.byteLength !== lengths[i]) throw new ChunkCorruptError(d, `has ${raw.byteLength} bytes, the index says ${lengths[i]}`);
    at += raw.byteLength;
  }
  return out;
}

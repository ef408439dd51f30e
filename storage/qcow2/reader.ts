/**
 * Reads a qcow2 image (v2 and v3) without qemu: the header (format.ts), the
 * internal snapshot table (snapshot-table.ts), the guest layout of the
 * active layer as extents, and guest bytes.
 *
 * The extent walk reads the needed part of the active L1 table (64 KiB at a
 * time) and one L2 table (one cluster) per allocated L1 entry, nothing
 * else: it is a bounded nested loop (L1 entries, then L2 entries), so
 * self-referencing or overlapping tables cannot make it loop, and its memory
 * is a few clusters whatever the header says. Every L2 table offset, data
 * cluster offset and compressed descriptor is checked (alignment, inside
 * the file) before it is used.
 *
 * Its time is bounded by the file's size: one walk may visit at most as many
 * allocated L1 entries as the file has clusters (more means L1 entries share
 * L2 tables, which qemu-img check calls corruption: QCOW2_INVALID), so it
 * visits at most fileSize / 8 L2 entries. Runs of plain zero or unallocated
 * L2 entries are skipped over in one step. A caller streaming the guest data
 * can also cap the data + compressed bytes a walk may describe
 * (WalkOptions.maxAllocatedBytes).
 *
 * Extents come in guest order and cover the requested range exactly:
 *   data         host bytes at hostOffset (runs with contiguous host offsets are merged)
 *   zero         reads as zeros (v3 zero flag, or extended L2 zero bits)
 *   unallocated  not in this image: read from the backing file, or zeros without one
 *   compressed   one compressed cluster (never merged); hostOffset and
 *                compressedSize describe the whole cluster's compressed data
 * With extended L2 entries the runs are per subcluster (cluster size / 32).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { SnapyardError } from '../errors.js';
import { ClusterDecompressor } from './cluster-decompress.js';
import {
  clusterSizeFromPrefix,
  decodeCompressed,
  HEADER_PREFIX_LENGTH,
  hasQcow2Magic,
  invalid,
  L2_COMPRESSED_HI,
  L2_ZERO_LO,
  OFFSET_MASK_HI,
  OFFSET_MASK_LO,
  parseHeader,
  SUBCLUSTERS_PER_CLUSTER,
  type Qcow2Header,
} from './format.js';
import { HostFile } from './host-file.js';
import { readSnapshotTable, type Qcow2Snapshot } from './snapshot-table.js';

export type { Qcow2Header } from './format.js';
export type { Qcow2Snapshot } from './snapshot-table.js';

export type ExtentKind = 'data' | 'zero' | 'unallocated' | 'compressed';

export interface Extent {
  guestOffset: number;
  length: number;
  kind: ExtentKind;
  /** data: host offset of guestOffset; compressed: host offset of the cluster's compressed data. */
  hostOffset?: number;
  /** compressed: bytes from hostOffset to the end of the descriptor's last sector. */
  compressedSize?: number;
}

/** Where unallocated ranges are read from (e.g. the backing image, itself a Qcow2Image). */
export interface BackingReader {
  readGuest(guestOffset: number, length: number): Buffer;
  /** Optional: fills target with guest bytes at guestOffset (avoids a copy). */
  readGuestInto?(target: Buffer, guestOffset: number): void;
  /** Optional: reads at or past this size give zeros without asking the backing reader. */
  readonly virtualSize?: number;
}

export interface OpenOptions {
  /** Default backing reader for readGuest. */
  backing?: BackingReader;
  /**
   * Keep up to this many L2 tables once read (default 0: every walk reads the
   * tables it crosses). For a file that does not change while it is open: a
   * push reading its chunks one by one would otherwise read a whole table per
   * chunk.
   */
  cachedTables?: number;
}

export interface WalkOptions {
  /** QCOW2_INVALID once the data and compressed extents of the walk add up to more than this. */
  maxAllocatedBytes?: number;
}

/** L1 entries read at once (64 KiB). */
const L1_BATCH = 8192;
const TWO32 = 2 ** 32;

/** Merges runs into extents; push() returns the extent it completes, if any. */
class ExtentBuilder {
  private pending: Extent | undefined;
  private allocated = 0;

  constructor(private readonly maxAllocated = Infinity) {}

  push(guestOffset: number, length: number, kind: ExtentKind, hostOffset = 0, compressedSize = 0): Extent | undefined {
    if (kind === 'data' || kind === 'compressed') {
      this.allocated += length;
      if (this.allocated > this.maxAllocated) {
        throw invalid(`more than ${this.maxAllocated} bytes of allocated guest data (at guest 0x${guestOffset.toString(16)}): too much for a file of this size`);
      }
    }
    const p = this.pending;
    if (p && p.kind === kind && kind !== 'compressed' && (kind !== 'data' || p.hostOffset! + p.length === hostOffset)) {
      p.length += length;
      return undefined;
    }
    const e: Extent = { guestOffset, length, kind };
    if (kind === 'data' || kind === 'compressed') e.hostOffset = hostOffset;
    if (kind === 'compressed') e.compressedSize = compressedSize;
    this.pending = e;
    return p;
  }

  flush(): Extent | undefined {
    const p = this.pending;
    this.pending = undefined;
    return p;
  }
}

export class Qcow2Image {
  readonly header: Qcow2Header;
  readonly virtualSize: number;
  readonly clusterSize: number;
  readonly backingFile: string | undefined;
  readonly backingFormat: string | undefined;
  readonly snapshots: Qcow2Snapshot[];
  /** Size of the image file in bytes. */
  readonly fileSize: number;
  backing: BackingReader | undefined;

  private readonly file: HostFile;
  /** Free table buffers: each running extents() walk takes its own, so walks can interleave. */
  private readonly l1Pool: Buffer[] = [];
  private readonly l2Pool: Buffer[];
  private decompressor: ClusterDecompressor | undefined;
  private compressedBuf: Buffer | undefined;
  private clusterBuf: Buffer | undefined;
  /** Host offset of the compressed cluster whose bytes are in clusterBuf (-1: none). */
  private cachedCompressed = -1;
  /** L2 tables kept by file offset (OpenOptions.cachedTables); never overwritten, so interleaved walks are safe. */
  private readonly tables = new Map<number, Buffer>();
  private readonly keepTables: number;

  /** True when the file starts with the qcow2 magic (callers fall back to byte chunking otherwise). */
  static sniff(path: string): boolean {
    const fd = openSync(path, 'r');
    try {
      const b = Buffer.alloc(4);
      return readSync(fd, b, 0, 4, 0) === 4 && hasQcow2Magic(b);
    } finally {
      closeSync(fd);
    }
  }

  /** Opens and checks an image; throws SnapyardError('QCOW2_INVALID') for anything it cannot read safely. */
  static open(path: string, opts: OpenOptions = {}): Qcow2Image {
    const file = new HostFile(path);
    try {
      return new Qcow2Image(file, opts);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  private constructor(file: HostFile, opts: OpenOptions) {
    this.file = file;
    this.fileSize = file.size;
    const prefix = Buffer.alloc(HEADER_PREFIX_LENGTH);
    file.readZeroFilled(prefix, 0);
    const clusterSize = clusterSizeFromPrefix(prefix, file.size);
    const first = Buffer.alloc(clusterSize);
    file.readZeroFilled(first, 0);
    this.header = parseHeader(first, file.size);
    this.virtualSize = this.header.size;
    this.clusterSize = clusterSize;
    this.backingFile = this.header.backingFile;
    this.backingFormat = this.header.backingFormat;
    this.snapshots = readSnapshotTable(file, this.header);
    this.backing = opts.backing;
    this.keepTables = opts.cachedTables ?? 0;
    this.l2Pool = [first]; // reused: the header is parsed
  }

  close(): void {
    this.file.close();
  }

  /** The active layer's guest layout over [start, end) (default: the whole disk), in guest order. */
  *extents(start = 0, end = this.virtualSize, opts: WalkOptions = {}): Generator<Extent> {
    checkRange(start, end - start, this.virtualSize);
    if (start === end) return;
    const { clusterSize: cs, l2Entries, l1TableOffset } = this.header;
    const span = cs * l2Entries;
    const out = new ExtentBuilder(opts.maxAllocatedBytes);
    /** Distinct L2 tables are distinct clusters of the file: more references than that means shared tables. */
    const maxTables = Math.floor(this.fileSize / cs);
    let tables = 0;
    const firstL1 = Math.floor(start / span);
    const lastL1 = Math.floor((end - 1) / span);
    const l1Buf = this.l1Pool.pop() ?? Buffer.alloc(Math.min(L1_BATCH, this.header.l1EntriesNeeded) * 8);
    const l2Buf = this.l2Pool.pop() ?? Buffer.alloc(cs);
    try {
      for (let batch = firstL1; batch <= lastL1; batch += L1_BATCH) {
        const n = Math.min(L1_BATCH, lastL1 - batch + 1);
        const l1 = this.file.readExact(l1Buf.subarray(0, n * 8), l1TableOffset + batch * 8, 'L1 table');
        for (let k = 0; k < n; k++) {
          const l1Index = batch + k;
          const lo = Math.max(start, l1Index * span);
          const hi = Math.min(end, (l1Index + 1) * span);
          const l2Offset = (l1.readUInt32BE(k * 8) & OFFSET_MASK_HI) * TWO32 + ((l1.readUInt32BE(k * 8 + 4) & OFFSET_MASK_LO) >>> 0);
          if (l2Offset === 0) {
            const e = out.push(lo, hi - lo, 'unallocated');
            if (e) yield e;
            continue;
          }
          if (l2Offset % cs !== 0) throw invalid(`L1 entry ${l1Index}: L2 table offset 0x${l2Offset.toString(16)} is not cluster aligned`);
          if (++tables > maxTables) {
            throw invalid(`L1 entry ${l1Index}: more L2 tables referenced than the file (${this.fileSize} bytes) can hold: L1 entries share L2 tables`);
          }
          yield* this.walkL2(this.l2Table(l2Buf, l2Offset, l1Index), l1Index, lo, hi, out);
        }
      }
    } finally {
      if (this.l1Pool.length < 2) this.l1Pool.push(l1Buf);
      if (this.l2Pool.length < 2) this.l2Pool.push(l2Buf);
    }
    const last = out.flush();
    if (last) yield last;
  }

  /** The L2 table at `offset`: from the kept tables, else read (into `buf` when none are kept). */
  private l2Table(buf: Buffer, offset: number, l1Index: number): Buffer {
    if (this.keepTables === 0) return this.file.readExact(buf, offset, `L1 entry ${l1Index}: L2 table`);
    const kept = this.tables.get(offset);
    if (kept) return kept;
    const table = this.file.readExact(Buffer.allocUnsafe(this.clusterSize), offset, `L1 entry ${l1Index}: L2 table`);
    if (this.tables.size >= this.keepTables) this.tables.delete(this.tables.keys().next().value!);
    this.tables.set(offset, table);
    return table;
  }

  /** Extents of guest range [lo, hi), inside the span of L2 table `l2` (L1 entry l1Index). */
  private *walkL2(l2: Buffer, l1Index: number, lo: number, hi: number, out: ExtentBuilder): Generator<Extent> {
    const { clusterSize: cs, clusterBits, l2Entries, extendedL2, version } = this.header;
    const base = l1Index * l2Entries * cs;
    const entrySize = extendedL2 ? 16 : 8;
    const fileSize = this.fileSize;
    const scs = cs / SUBCLUSTERS_PER_CLUSTER;
    const firstIdx = Math.floor((lo - base) / cs);
    const lastIdx = Math.floor((hi - 1 - base) / cs);
    for (let i = firstIdx; i <= lastIdx; i++) {
      const cStart = base + i * cs;
      const a = Math.max(lo, cStart);
      const b = Math.min(hi, cStart + cs);
      const eHi = l2.readUInt32BE(i * entrySize);
      const eLo = l2.readUInt32BE(i * entrySize + 4);
      let e: Extent | undefined;
      if (!extendedL2 && eHi === 0 && (eLo === 0 || (eLo === L2_ZERO_LO && version >= 3))) {
        // A plain unallocated (0) or zero (1) entry: skip the run of identical entries in one step.
        let j = i + 1;
        while (j <= lastIdx && l2.readUInt32BE(j * 8) === 0 && l2.readUInt32BE(j * 8 + 4) === eLo) j++;
        const runEnd = Math.min(hi, base + j * cs);
        e = out.push(a, runEnd - a, eLo === 0 ? 'unallocated' : 'zero');
        if (e) yield e;
        i = j - 1;
        continue;
      }
      if (eHi & L2_COMPRESSED_HI) {
        const c = decodeCompressed(eHi, eLo, clusterBits);
        if (c.offset >= fileSize || c.offset + c.size > Math.ceil(fileSize / 512) * 512) {
          throw invalid(`${where(i, l1Index, cStart)}: compressed data at 0x${c.offset.toString(16)} (+${c.size} bytes) is past the end of the file (${fileSize} bytes)`);
        }
        e = out.push(a, b - a, 'compressed', c.offset, c.size);
        if (e) yield e;
        continue;
      }
      const host = (eHi & OFFSET_MASK_HI) * TWO32 + ((eLo & OFFSET_MASK_LO) >>> 0);
      if (host % cs !== 0) throw invalid(`${where(i, l1Index, cStart)}: cluster offset 0x${host.toString(16)} is not cluster aligned`);
      // Data must start inside the file; a cluster the file ends in reads as zeros past the end (as in qemu).
      const pastEnd = host >= fileSize;
      if (!extendedL2) {
        if (eLo & L2_ZERO_LO) {
          if (version < 3) throw invalid(`${where(i, l1Index, cStart)}: zero flag in a version 2 image`);
          e = out.push(a, b - a, 'zero');
        } else if (host === 0) {
          e = out.push(a, b - a, 'unallocated');
        } else {
          if (pastEnd) throw invalid(`${where(i, l1Index, cStart)}: data cluster at 0x${host.toString(16)} is past the end of the file (${fileSize} bytes)`);
          e = out.push(a, b - a, 'data', host + (a - cStart));
        }
        if (e) yield e;
        continue;
      }
      // Extended L2: bitmap bits 0-31 allocated, 32-63 reads as zeros, one bit per subcluster.
      const alloc = l2.readUInt32BE(i * 16 + 12);
      const zero = l2.readUInt32BE(i * 16 + 8);
      if (host === 0 && alloc !== 0) throw invalid(`${where(i, l1Index, cStart)}: subclusters allocated (bitmap 0x${alloc.toString(16)}) without a cluster offset`);
      if ((alloc & zero) !== 0) throw invalid(`${where(i, l1Index, cStart)}: subclusters both allocated and zero (0x${((alloc & zero) >>> 0).toString(16)})`);
      if (alloc !== 0 && pastEnd) throw invalid(`${where(i, l1Index, cStart)}: data cluster at 0x${host.toString(16)} is past the end of the file (${fileSize} bytes)`);
      const firstSc = Math.floor((a - cStart) / scs);
      const lastSc = Math.floor((b - 1 - cStart) / scs);
      for (let s = firstSc; s <= lastSc; s++) {
        const sa = Math.max(a, cStart + s * scs);
        const sb = Math.min(b, cStart + (s + 1) * scs);
        const bit = 1 << s;
        if (alloc & bit) e = out.push(sa, sb - sa, 'data', host + (sa - cStart));
        else if (zero & bit) e = out.push(sa, sb - sa, 'zero');
        else e = out.push(sa, sb - sa, 'unallocated');
        if (e) yield e;
      }
    }
  }

  /** Guest bytes of the active layer; unallocated ranges come from `backing` (default: the one given to open), else zeros. */
  readGuest(guestOffset: number, length: number, backing: BackingReader | undefined = this.backing): Buffer {
    checkRange(guestOffset, length, this.virtualSize);
    const out = Buffer.allocUnsafe(length);
    this.readGuestInto(out, guestOffset, backing);
    return out;
  }

  /** Fills target with guest bytes at guestOffset (see readGuest). */
  readGuestInto(target: Buffer, guestOffset: number, backing: BackingReader | undefined = this.backing): void {
    checkRange(guestOffset, target.byteLength, this.virtualSize);
    for (const e of this.extents(guestOffset, guestOffset + target.byteLength)) {
      const t = target.subarray(e.guestOffset - guestOffset, e.guestOffset - guestOffset + e.length);
      switch (e.kind) {
        case 'data':
          this.file.readZeroFilled(t, e.hostOffset!);
          break;
        case 'zero':
          t.fill(0);
          break;
        case 'unallocated':
          readBacking(backing, t, e.guestOffset);
          break;
        case 'compressed': {
          const cluster = this.compressedCluster(e);
          const from = e.guestOffset % this.clusterSize;
          cluster.copy(t, 0, from, from + e.length);
          break;
        }
      }
    }
  }

  /** The decompressed guest cluster of a 'compressed' extent (cached: sequential reads decompress once). */
  private compressedCluster(e: Extent): Buffer {
    const host = e.hostOffset!;
    this.clusterBuf ??= Buffer.alloc(this.clusterSize);
    if (this.cachedCompressed === host) return this.clusterBuf;
    this.decompressor ??= new ClusterDecompressor(this.header.compressionType, this.clusterSize);
    this.compressedBuf ??= Buffer.alloc(2 * this.clusterSize); // the descriptor allows at most 2^(cluster_bits-8) sectors
    const src = this.compressedBuf.subarray(0, e.compressedSize!);
    this.file.readZeroFilled(src, host);
    this.cachedCompressed = -1;
    this.decompressor.decompress(src, this.clusterBuf, `at host 0x${host.toString(16)} (guest 0x${e.guestOffset.toString(16)})`);
    this.cachedCompressed = host;
    return this.clusterBuf;
  }
}

function where(l2Index: number, l1Index: number, guest: number): string {
  return `L2 entry ${l2Index} of L1 entry ${l1Index} (guest 0x${guest.toString(16)})`;
}

function checkRange(offset: number, length: number, size: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new SnapyardError('RANGE_INVALID', `guest range ${offset} +${length} is outside the disk (${size} bytes)`);
  }
}

function readBacking(backing: BackingReader | undefined, t: Buffer, guestOffset: number): void {
  if (!backing) {
    t.fill(0);
    return;
  }
  // Past the end of a smaller backing image: zeros.
  const avail = backing.virtualSize === undefined ? t.byteLength : Math.max(0, Math.min(t.byteLength, backing.virtualSize - guestOffset));
  if (avail < t.byteLength) t.fill(0, avail);
  if (avail === 0) return;
  const part = t.subarray(0, avail);
  if (backing.readGuestInto) backing.readGuestInto(part, guestOffset);
  else {
    const b = backing.readGuest(guestOffset, avail);
    if (b.byteLength !== avail) throw new SnapyardError('INTERNAL', `backing reader returned ${b.byteLength} bytes, expected ${avail}`);
    b.copy(part);
  }
}

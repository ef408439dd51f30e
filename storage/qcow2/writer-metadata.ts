/**
 * The pieces of the qcow2 writer (writer.ts) that know the on-disk encoding:
 * the in-memory guest -> host mapping (runs), the header cluster, and the
 * metadata written at finish (L2 tables, L1 table, refcount table and
 * blocks). The layout itself is described at the top of writer.ts.
 */
import type { FileHandle } from 'node:fs/promises';
import { SnapyardError } from '../errors.js';

const MiB = 1024 * 1024;
export const QCOW2_MAGIC = 0x514649fb;
/** v3 header through compression_type (byte 104), padded to a multiple of 8, as qemu writes it. */
export const HEADER_LENGTH = 112;
export const EXT_BACKING_FORMAT = 0xe2792aca;
/** 16-bit refcounts. */
export const REFCOUNT_ORDER = 4;
/** Bit 63 of an L1/L2 entry (refcount is exactly one), as a flag of the high 32-bit word. */
const COPIED_HI = 0x80000000;
/** Bit 0 of a standard L2 entry: the cluster reads as zeros. */
const ZERO_FLAG_LO = 1;
/** qemu's implementation limits. */
export const MAX_L1_BYTES = 32 * MiB;
export const MAX_REFTABLE_BYTES = 8 * MiB;
/** Size of the buffers that coalesce writes. */
export const WRITE_BUFFER_BYTES = 4 * MiB;
/** Runs are split at this many clusters (the count shares a u32 with the kind bit). */
const MAX_RUN = 0x7fffffff;
const TWO32 = 0x1_0000_0000;

export const align8 = (n: number) => Math.ceil(n / 8) * 8;

/** Validated image parameters. */
export interface ImageParams {
  virtualSize: number;
  clusterBits: number;
  /** Backing file name as stored (UTF-8). */
  backingFile?: Buffer;
  /** Backing format name as stored (ASCII). */
  backingFormat?: Buffer;
}

/**
 * The guest -> host mapping as runs of consecutive guest clusters of one kind
 * (data or zero), in increasing guest order: pairs of u32 [first cluster,
 * count * 2 + isZero]. A data run's host clusters follow those of the data
 * runs before it (data is appended in guest order), so they are not stored.
 */
export class RunList {
  private a = new Uint32Array(2 * 256);
  length = 0;

  push(start: number, count: number, zero: boolean): void {
    const kind = zero ? 1 : 0;
    if (this.length > 0) {
      const i = 2 * (this.length - 1);
      const lastStart = this.a[i]!;
      const lastWord = this.a[i + 1]!;
      const lastCount = lastWord >>> 1;
      if ((lastWord & 1) === kind && lastStart + lastCount === start) {
        const add = Math.min(count, MAX_RUN - lastCount);
        this.a[i + 1] = (lastCount + add) * 2 + kind;
        start += add;
        count -= add;
      }
    }
    while (count > 0) {
      const n = Math.min(count, MAX_RUN);
      if (2 * this.length + 2 > this.a.length) {
        const bigger = new Uint32Array(this.a.length * 2);
        bigger.set(this.a);
        this.a = bigger;
      }
      this.a[2 * this.length] = start;
      this.a[2 * this.length + 1] = n * 2 + kind;
      this.length++;
      start += n;
      count -= n;
    }
  }

  start(i: number): number {
    return this.a[2 * i]!;
  }
  count(i: number): number {
    return this.a[2 * i + 1]! >>> 1;
  }
  isZero(i: number): boolean {
    return (this.a[2 * i + 1]! & 1) === 1;
  }
}

export async function writeFully(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done);
    if (bytesWritten <= 0) throw new SnapyardError('INTERNAL', `short write at offset ${position + done}`);
    done += bytesWritten;
  }
}

/** Writes sequentially from a position through one buffer; hands out zeroed slices to fill in place. */
class Appender {
  private readonly buf: Buffer;
  private used = 0;
  constructor(
    private readonly fh: FileHandle,
    private pos: number,
    size: number,
  ) {
    this.buf = Buffer.allocUnsafe(size);
  }

  /** A zeroed slice of `len` bytes (at most the buffer size), written after the previous ones. */
  async reserve(len: number): Promise<DataView> {
    if (this.used + len > this.buf.length) await this.flush();
    const s = this.buf.subarray(this.used, this.used + len);
    s.fill(0);
    this.used += len;
    return new DataView(s.buffer, s.byteOffset, s.byteLength);
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    await writeFully(this.fh, this.buf.subarray(0, this.used), this.pos);
    this.pos += this.used;
    this.used = 0;
  }
}

/** Sets a 64-bit big-endian entry: a host offset (< 2^53) or'ed with flags of its high and low words. */
function putEntry(view: DataView, at: number, offset: number, hiFlags: number, loFlags: number): void {
  view.setUint32(at, (Math.floor(offset / TWO32) | hiFlags) >>> 0);
  view.setUint32(at + 4, ((offset % TWO32) | loFlags) >>> 0);
}

/** Bytes of the first cluster used by the header, its extensions and the backing file name. */
export function headerClusterBytes(p: ImageParams): number {
  return HEADER_LENGTH + (p.backingFormat ? 8 + align8(p.backingFormat.length) : 0) + 8 + (p.backingFile?.length ?? 0);
}

export interface Layout {
  l1Size: number;
  l1Offset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots?: number;
  snapshotsOffset?: number;
}

/** The header cluster: v3 header, backing-format extension, end of extensions, backing file name. */
export function encodeHeader(p: ImageParams, layout: Layout): Buffer {
  const h = Buffer.alloc(2 ** p.clusterBits);
  h.writeUInt32BE(QCOW2_MAGIC, 0);
  h.writeUInt32BE(3, 4); // version
  // 8: backing_file_offset, 16: backing_file_size (set below when there is a backing file)
  h.writeUInt32BE(p.clusterBits, 20);
  h.writeBigUInt64BE(BigInt(p.virtualSize), 24);
  // 32: crypt_method 0
  h.writeUInt32BE(layout.l1Size, 36);
  h.writeBigUInt64BE(BigInt(layout.l1Offset), 40);
  h.writeBigUInt64BE(BigInt(layout.refcountTableOffset), 48);
  h.writeUInt32BE(layout.refcountTableClusters, 56);
  h.writeUInt32BE(layout.nbSnapshots ?? 0, 60);
  h.writeBigUInt64BE(BigInt(layout.snapshotsOffset ?? 0), 64);
  // 72, 80, 88: incompatible, compatible, autoclear features 0
  h.writeUInt32BE(REFCOUNT_ORDER, 96);
  h.writeUInt32BE(HEADER_LENGTH, 100);
  // 104: compression_type 0 (zlib), 105..111 padding
  let at = HEADER_LENGTH;
  if (p.backingFormat) {
    h.writeUInt32BE(EXT_BACKING_FORMAT, at);
    h.writeUInt32BE(p.backingFormat.length, at + 4);
    p.backingFormat.copy(h, at + 8);
    at += 8 + align8(p.backingFormat.length);
  }
  at += 8; // end of the header extensions: type 0, length 0
  if (p.backingFile) {
    p.backingFile.copy(h, at);
    h.writeBigUInt64BE(BigInt(at), 8);
    h.writeUInt32BE(p.backingFile.length, 16);
  }
  return h;
}

/**
 * Refcount blocks (RB) and refcount table clusters (RT) for an image whose
 * other clusters number `before`: the least fixed point of
 * total = before + RT + RB, RB = ceil(total / (C/2)), RT = ceil(RB * 8 / C).
 * Iterating from zero only increases both, and stops within a few rounds.
 */
export function refcountClusters(before: number, clusterSize: number): { blocks: number; tableClusters: number } {
  const perBlock = clusterSize / 2; // 16-bit refcounts
  let blocks = 0;
  let tableClusters = 0;
  for (;;) {
    const total = before + tableClusters + blocks;
    const b = Math.ceil(total / perBlock);
    const t = Math.ceil((b * 8) / clusterSize);
    if (b === blocks && t === tableClusters) return { blocks, tableClusters };
    blocks = b;
    tableClusters = t;
  }
}

/** One guest view of the image: the active disk, or an internal snapshot's (disk and VM state). */
export interface View {
  runs: RunList;
  /** Host clusters of this view's data (they follow the data of the views before it). */
  dataClusters: number;
  l1Size: number;
}

/** L2 tables a view needs: one per L1 slot that any run touches. */
function countL2Tables(runs: RunList, l2Entries: number): number {
  let l2Tables = 0;
  let lastSlot = -1;
  for (let i = 0; i < runs.length; i++) {
    const firstSlot = Math.floor(runs.start(i) / l2Entries);
    const endSlot = Math.floor((runs.start(i) + runs.count(i) - 1) / l2Entries);
    l2Tables += endSlot - Math.max(firstSlot, lastSlot + 1) + 1;
    lastSlot = endSlot;
  }
  return l2Tables;
}

/**
 * Writes a view's L2 tables from cluster `l2Start` and its L1 table right
 * after them; its data starts at host cluster `dataStart`. `copied` sets
 * bit 63 (the active view: every refcount is 1); snapshot views leave it
 * clear, as qemu does for tables that are not the active one.
 */
async function writeView(fh: FileHandle, view: View, cs: number, dataStart: number, l2Start: number, l2Tables: number, copied: boolean): Promise<void> {
  const l2Entries = cs / 8;
  const flag = copied ? COPIED_HI : 0;
  const l1 = Buffer.alloc(Math.ceil((view.l1Size * 8) / cs) * cs);
  const l1View = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
  const l2Out = new Appender(fh, l2Start * cs, Math.max(WRITE_BUFFER_BYTES, cs));
  const { runs } = view;
  let table: DataView | undefined;
  let tableSlot = -1;
  let nextTable = l2Start;
  let host = dataStart;
  for (let i = 0; i < runs.length; i++) {
    const zero = runs.isZero(i);
    const end = runs.start(i) + runs.count(i);
    for (let g = runs.start(i); g < end; g++) {
      const slot = Math.floor(g / l2Entries);
      if (slot !== tableSlot) {
        table = await l2Out.reserve(cs);
        tableSlot = slot;
        putEntry(l1View, slot * 8, nextTable++ * cs, flag, 0);
      }
      const at = (g % l2Entries) * 8;
      if (zero) putEntry(table!, at, 0, 0, ZERO_FLAG_LO);
      else putEntry(table!, at, host++ * cs, flag, 0);
    }
  }
  if (nextTable !== l2Start + l2Tables || host !== dataStart + view.dataClusters) throw new SnapyardError('INTERNAL', 'qcow2 writer: metadata layout mismatch');
  await l2Out.flush();
  if (l1.length > 0) await writeFully(fh, l1, (l2Start + l2Tables) * cs);
}

/** Internal snapshots to write: one view each, and the encoded table given each one's L1 offset. */
export interface SnapshotViews {
  views: View[];
  encodeTable(l1Offsets: number[]): Buffer;
}

/**
 * Writes, after the data clusters (which follow the header cluster), each
 * view's L2 tables and L1 table (the active view first, then the
 * snapshots'), the snapshot table, the refcount table and the refcount
 * blocks, then the header cluster. Every cluster is referenced once, so
 * every refcount is 1. Returns the file size in bytes.
 */
export async function writeMetadata(fh: FileHandle, p: ImageParams, active: View, snapshots: SnapshotViews = { views: [], encodeTable: () => Buffer.alloc(0) }): Promise<number> {
  const cs = 2 ** p.clusterBits;
  const l2Entries = cs / 8;
  const refcountsPerBlock = cs / 2;
  const views = [active, ...snapshots.views];

  // Layout: per view, its L2 tables then its L1 table; then the snapshot table.
  let dataStart = 1;
  let next = 1 + views.reduce((n, v) => n + v.dataClusters, 0);
  const placed: Array<{ dataStart: number; l2Start: number; l2Tables: number; l1Start: number }> = [];
  for (const v of views) {
    const l2Tables = countL2Tables(v.runs, l2Entries);
    placed.push({ dataStart, l2Start: next, l2Tables, l1Start: next + l2Tables });
    dataStart += v.dataClusters;
    next += l2Tables + Math.ceil((v.l1Size * 8) / cs);
  }
  const table = snapshots.encodeTable(placed.slice(1).map((x) => x.l1Start * cs));
  const tableStart = next;
  const rtStart = tableStart + Math.ceil(table.length / cs);
  const { blocks, tableClusters } = refcountClusters(rtStart, cs);
  if (tableClusters * cs > MAX_REFTABLE_BYTES) {
    throw new SnapyardError('INVALID_ARGUMENT', `the image needs a refcount table of ${tableClusters * cs} bytes (qemu's limit is ${MAX_REFTABLE_BYTES}); use larger clusters`);
  }
  const rbStart = rtStart + tableClusters;
  const totalClusters = rbStart + blocks;

  for (let i = 0; i < views.length; i++) {
    const x = placed[i]!;
    await writeView(fh, views[i]!, cs, x.dataStart, x.l2Start, x.l2Tables, i === 0);
  }
  if (table.length > 0) await writeFully(fh, table, tableStart * cs);

  // Refcount table, then the refcount blocks: every cluster of the file has refcount 1.
  const rcOut = new Appender(fh, rtStart * cs, Math.max(WRITE_BUFFER_BYTES, cs));
  let rt: DataView | undefined;
  for (let b = 0; b < blocks; b++) {
    const at = (b * 8) % cs;
    if (at === 0) rt = await rcOut.reserve(cs);
    putEntry(rt!, at, (rbStart + b) * cs, 0, 0);
  }
  for (let b = 0; b < blocks; b++) {
    const block = await rcOut.reserve(cs);
    const used = Math.min(refcountsPerBlock, totalClusters - b * refcountsPerBlock);
    for (let k = 0; k < used; k++) block.setUint16(k * 2, 1);
  }
  await rcOut.flush();

  const header = encodeHeader(p, {
    l1Size: active.l1Size,
    l1Offset: active.l1Size > 0 ? placed[0]!.l1Start * cs : 0,
    refcountTableOffset: rtStart * cs,
    refcountTableClusters: tableClusters,
    nbSnapshots: snapshots.views.length,
    snapshotsOffset: table.length > 0 ? tableStart * cs : 0,
  });
  await writeFully(fh, header, 0);
  const fileSize = totalClusters * cs;
  await fh.truncate(fileSize);
  return fileSize;
}

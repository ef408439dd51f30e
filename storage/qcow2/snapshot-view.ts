/**
 * One guest view of a qcow2 image through any of its L1 tables: the active
 * one, or an internal snapshot's, whose address space goes past the disk
 * into the VM state (snapshot-table.ts reads the entries; reader.ts walks
 * only the active view). Used to carry snapshots from an image into an
 * overlay over it: compare a snapshot's clusters with the active view's,
 * read the ones that differ and the VM state.
 *
 * Standard (64-bit) L2 entries only; an image with extended L2 entries is
 * refused. One L2 table is cached; reads are bounded by the caller's buffer.
 */
import { ClusterDecompressor } from './cluster-decompress.js';
import { decodeCompressed, invalid, L2_COMPRESSED_HI, L2_ZERO_LO, OFFSET_MASK_HI, OFFSET_MASK_LO, type Qcow2Header } from './format.js';
import { HostFile } from './host-file.js';
import type { BackingReader } from './reader.js';

const TWO32 = 0x1_0000_0000;
const COPIED_HI = 0x80000000;

export class L1View {
  private readonly file: HostFile;
  private readonly cs: number;
  private readonly l1: Buffer;
  private readonly l2: Buffer;
  private l2Offset = -1;
  private decompressor: ClusterDecompressor | undefined;
  private cluster: Buffer | undefined;

  /**
   * `path` is the image, `header` its parsed header; the view is the L1
   * table of `l1Size` entries at `l1Offset`. Guest bytes below `diskSize`
   * that the view leaves unallocated read from `backing` (zeros without
   * one); past the disk they read as zeros, as qemu reads the VM state.
   */
  constructor(
    path: string,
    private readonly header: Qcow2Header,
    l1Offset: number,
    l1Size: number,
    private readonly backing?: BackingReader,
  ) {
    if (header.extendedL2) throw invalid(`${path}: snapshots of images with extended L2 entries cannot be carried`);
    this.cs = header.clusterSize;
    this.file = new HostFile(path);
    try {
      this.l1 = l1Size > 0 ? this.file.readExact(Buffer.alloc(l1Size * 8), l1Offset, 'L1 table') : Buffer.alloc(0);
    } catch (e) {
      this.file.close();
      throw e;
    }
    this.l2 = Buffer.alloc(this.cs);
  }

  close(): void {
    this.file.close();
  }

  /** The L2 entry of a guest cluster as a comparable key, the COPIED flag left out ('0:0' when unallocated). */
  entryKey(guestCluster: number): string {
    const e = this.entry(guestCluster);
    return `${(e.hi & ~COPIED_HI) >>> 0}:${e.lo}`;
  }

  /** True when every cluster overlapping [offset, offset + length) has the same entry in both views (so the same bytes). */
  sameMapping(other: L1View, offset: number, length: number): boolean {
    for (let c = Math.floor(offset / this.cs); c * this.cs < offset + length; c++) {
      if (this.entryKey(c) !== other.entryKey(c)) return false;
    }
    return true;
  }

  /** Fills `target` with the view's guest bytes at `offset`. */
  readInto(target: Buffer, offset: number): void {
    const { cs } = this;
    const disk = this.header.size;
    let done = 0;
    while (done < target.length) {
      const g = offset + done;
      const inCluster = g % cs;
      const n = Math.min(cs - inCluster, target.length - done);
      const t = target.subarray(done, done + n);
      const e = this.entry(Math.floor(g / cs));
      const host = (e.hi & OFFSET_MASK_HI) * TWO32 + ((e.lo & OFFSET_MASK_LO) >>> 0);
      if (e.hi & L2_COMPRESSED_HI) {
        this.decompressed(e.hi, e.lo, g).copy(t, 0, inCluster, inCluster + n);
      } else if (e.lo & L2_ZERO_LO) {
        t.fill(0);
      } else if (host !== 0) {
        if (host % cs !== 0 || host >= this.file.size) throw invalid(`guest 0x${g.toString(16)}: data cluster at 0x${host.toString(16)} is misaligned or past the end of the file`);
        this.file.readZeroFilled(t, host + inCluster);
      } else if (this.backing && g < disk) {
        const avail = Math.min(n, disk - g, this.backing.virtualSize === undefined ? n : Math.max(0, this.backing.virtualSize - g));
        t.fill(0, avail);
        if (avail > 0) {
          if (this.backing.readGuestInto) this.backing.readGuestInto(t.subarray(0, avail), g);
          else this.backing.readGuest(g, avail).copy(t);
        }
      } else {
        t.fill(0);
      }
      done += n;
    }
  }

  private entry(guestCluster: number): { hi: number; lo: number } {
    const l2Entries = this.cs / 8;
    const slot = Math.floor(guestCluster / l2Entries);
    if (slot * 8 >= this.l1.length) return { hi: 0, lo: 0 };
    const l2Offset = (this.l1.readUInt32BE(slot * 8) & OFFSET_MASK_HI) * TWO32 + ((this.l1.readUInt32BE(slot * 8 + 4) & OFFSET_MASK_LO) >>> 0);
    if (l2Offset === 0) return { hi: 0, lo: 0 };
    if (l2Offset !== this.l2Offset) {
      if (l2Offset % this.cs !== 0) throw invalid(`L1 entry ${slot}: L2 table offset 0x${l2Offset.toString(16)} is not cluster aligned`);
      this.l2Offset = -1;
      this.file.readExact(this.l2, l2Offset, `L1 entry ${slot}: L2 table`);
      this.l2Offset = l2Offset;
    }
    const i = guestCluster % l2Entries;
    return { hi: this.l2.readUInt32BE(i * 8), lo: this.l2.readUInt32BE(i * 8 + 4) };
  }

  private decompressed(hi: number, lo: number, g: number): Buffer {
    const c = decodeCompressed(hi, lo, this.header.clusterBits);
    if (c.offset >= this.file.size) throw invalid(`guest 0x${g.toString(16)}: compressed data at 0x${c.offset.toString(16)} is past the end of the file`);
    this.decompressor ??= new ClusterDecompressor(this.header.compressionType, this.cs);
    this.cluster ??= Buffer.alloc(this.cs);
    const src = Buffer.alloc(c.size);
    this.file.readZeroFilled(src, c.offset);
    this.decompressor.decompress(src, this.cluster, `at host 0x${c.offset.toString(16)} (guest 0x${g.toString(16)})`);
    return this.cluster;
  }
}


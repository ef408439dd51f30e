/**
 * Tells, while a qcow2 upload streams in, which of its host bytes are guest
 * data (and in what order they enter the data stream), so the guest view can
 * be chunked as the bytes arrive instead of from a spooled file afterwards
 * (storage/blobs/qcow2-ingest.ts).
 *
 * It understands the common layout, what `qemu-img convert -O qcow2` and
 * `qemu-img create` + guest writes in disk order produce: the header cluster,
 * then the L1 table, then each L2 table before the data clusters it maps,
 * data clusters in increasing guest order (refcount structures and anything
 * else may sit in between: they are residue). It reads the L1 entries as
 * they pass, copies each L2 table (one cluster) as it passes, and from then
 * on knows which coming host clusters are data and at which guest offset.
 *
 * It is a guess, checked afterwards: the ingest compares what it saw (the
 * recipe's ops and the data stream's size) with the layout plan of the
 * complete file (layout-plan.ts), and chunks the spooled file instead when
 * they differ. Anything it does not expect makes it give up at once (the
 * rest of the upload is only spooled): a short or unreadable header,
 * internal snapshots, extended L2 entries, compressed clusters, an L2 table
 * or data cluster at a host offset already passed, a data cluster whose
 * guest offset is lower than one already seen (a shuffled host layout),
 * more pending runs or L2 tables than its bounds.
 *
 * Memory is bounded whatever the image: the first cluster and one L2 table
 * (each at most 2 MiB), at most MAX_TABLES L2 offsets and MAX_RUNS pending
 * data runs (typed arrays), and a running hash of the ops instead of the ops.
 */
import { createHash, type Hash } from 'node:crypto';
import {
  clusterSizeFromPrefix,
  HEADER_PREFIX_LENGTH,
  L2_COMPRESSED_HI,
  L2_ZERO_LO,
  OFFSET_MASK_HI,
  OFFSET_MASK_LO,
  parseHeader,
  type Qcow2Header,
} from './format.js';
import { OP_DATA, OP_RESIDUE } from '../blobs/qcow2-index.js';

/** L2 tables the active L1 may reference (more: give up). */
export const MAX_TABLES = 1 << 16;
/** Data runs announced by L2 tables and not reached yet (more: give up). */
export const MAX_RUNS = 1 << 16;
const TWO32 = 2 ** 32;

/** A running digest of a recipe's ops (kind, length, data-stream offset), merged as layout-plan.ts merges them. */
export class OpsDigest {
  private readonly hash: Hash = createHash('sha256');
  private readonly rec = Buffer.alloc(20);
  private kind = -1;
  private length = 0;
  private source = 0;
  count = 0;

  push(kind: number, length: number, source: number): void {
    if (length <= 0) return;
    if (kind === this.kind && (kind === OP_RESIDUE || this.source + this.length === source)) {
      this.length += length;
      return;
    }
    this.emit();
    this.kind = kind;
    this.length = length;
    this.source = kind === OP_DATA ? source : 0;
  }

  private emit(): void {
    if (this.kind < 0) return;
    this.rec.writeUInt32LE(this.kind, 0);
    this.rec.writeDoubleLE(this.length, 4);
    this.rec.writeDoubleLE(this.source, 12);
    this.hash.update(this.rec);
    this.count++;
    this.kind = -1;
  }

  digest(): string {
    this.emit();
    return this.hash.digest('hex');
  }
}

/** The OpsDigest of a plan's (or index layout's) ops. */
export function opsDigestOf(ops: { opKinds: Uint8Array; opLengths: Float64Array; opSources: Float64Array }): string {
  const d = new OpsDigest();
  for (let i = 0; i < ops.opKinds.length; i++) d.push(ops.opKinds[i]!, ops.opLengths[i]!, ops.opSources[i]!);
  return d.digest();
}

export class StreamClassifier {
  /** Why it gave up (undefined while it follows the stream). */
  gaveUp: string | undefined;
  /** Bytes of guest data handed out so far (the data stream's size). */
  streamBytes = 0;
  private readonly ops = new OpsDigest();
  /** Host offset of the next byte. */
  private pos = 0;
  private first: Buffer | undefined;
  private header: Qcow2Header | undefined;
  private l1End = 0;
  /** A partial L1 entry carried across pieces. */
  private readonly carry = Buffer.alloc(8);
  private l1Offsets: number[] = [];
  private l1Indexes: number[] = [];
  /** L2 tables in host order, once the L1 table has passed. */
  private l2Offsets: Float64Array | undefined;
  private l2Indexes: Uint32Array | undefined;
  private nextL2 = 0;
  private l2Buf: Buffer | undefined;
  /** Bytes of the current L2 table copied (-1: none being copied). */
  private l2Have = -1;
  /** Pending data runs, a FIFO in host order at [runHead, runHead + runCount): host start, guest start, length. */
  private runHost: Float64Array = new Float64Array(64);
  private runGuest: Float64Array = new Float64Array(64);
  private runLen: Float64Array = new Float64Array(64);
  private runHead = 0;
  private runCount = 0;
  private lastHostEnd = 0;
  private lastGuestEnd = 0;

  /** `sizeHint`: the declared blob size, if known (bounds the header's offsets as the file would). */
  constructor(private readonly sizeHint = Number.MAX_SAFE_INTEGER) {}

  get following(): boolean {
    return this.gaveUp === undefined;
  }

  private giveUp(why: string): void {
    this.gaveUp ??= why;
    this.first = undefined;
    this.l2Buf = undefined;
    this.l1Offsets = [];
    this.l1Indexes = [];
  }

  /** The data bytes of the next piece of the upload (views of it), in data-stream order. */
  feed(piece: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let i = 0;
    while (i < piece.byteLength && this.gaveUp === undefined) {
      const n = this.step(piece, i, out);
      i += n;
      this.pos += n;
    }
    return out;
  }

  /** Handles bytes piece[i..) at this.pos up to the next boundary; returns how many it took. */
  private step(piece: Uint8Array, i: number, out: Uint8Array[]): number {
    const avail = piece.byteLength - i;
    const pos = this.pos;
    const h = this.header;
    if (!h) return this.residue(this.takeHeader(piece, i));
    if (pos < this.l1End) {
      if (pos < h.l1TableOffset) return this.residue(Math.min(avail, h.l1TableOffset - pos));
      return this.residue(this.takeL1(piece, i, Math.min(avail, this.l1End - pos)));
    }
    if (this.l2Have >= 0) return this.residue(this.takeL2(piece, i, avail));
    if (this.runCount > 0) {
      const host = this.runHost[this.runHead]!;
      if (host < pos) {
        this.giveUp(`data cluster at 0x${host.toString(16)} was passed before its L2 table`);
        return 0;
      }
      if (host === pos) return this.data(piece, i, avail, out);
    }
    // Residue up to the next L2 table or data run.
    let next = Infinity;
    if (this.runCount > 0) next = this.runHost[this.runHead]!;
    if (this.l2Offsets && this.nextL2 < this.l2Offsets.length) {
      const t = this.l2Offsets[this.nextL2]!;
      if (t === pos) {
        if (next < pos + h.clusterSize) {
          this.giveUp(`data cluster at 0x${next.toString(16)} overlaps the L2 table at 0x${t.toString(16)}`);
          return 0;
        }
        this.l2Buf ??= Buffer.allocUnsafe(h.clusterSize);
        this.l2Have = 0;
        return 0;
      }
      next = Math.min(next, t);
    }
    return this.residue(Math.min(avail, next - pos));
  }

  private residue(n: number): number {
    this.ops.push(OP_RESIDUE, n, 0);
    return n;
  }

  private takeHeader(piece: Uint8Array, i: number): number {
    const need = this.first ? this.first.byteLength : HEADER_PREFIX_LENGTH;
    this.first ??= Buffer.alloc(HEADER_PREFIX_LENGTH);
    const n = Math.min(piece.byteLength - i, need - this.pos);
    this.first.set(piece.subarray(i, i + n), this.pos);
    if (this.pos + n < need) return n;
    try {
      if (need === HEADER_PREFIX_LENGTH) {
        const cs = clusterSizeFromPrefix(this.first, this.sizeHint);
        const whole = Buffer.alloc(cs);
        this.first.copy(whole);
        this.first = whole;
        return n;
      }
      const hd = parseHeader(this.first, this.sizeHint);
      if (hd.nbSnapshots > 0) this.giveUp('the image has internal snapshots');
      else if (hd.extendedL2) this.giveUp('extended L2 entries');
      else {
        this.header = hd;
        this.l1End = hd.l1TableOffset + hd.l1EntriesNeeded * 8;
        if (hd.l1EntriesNeeded === 0) this.l1Done();
      }
    } catch (e) {
      this.giveUp(`header: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.first = undefined;
    return n;
  }

  /** L1 entries as they pass (n bytes at piece[i], inside the table). */
  private takeL1(piece: Uint8Array, i: number, n: number): number {
    const h = this.header!;
    const span = h.clusterSize * h.l2Entries;
    for (let k = 0; k < n; ) {
      const at = this.pos + k - h.l1TableOffset;
      const o = at % 8;
      const m = Math.min(8 - o, n - k);
      this.carry.set(piece.subarray(i + k, i + k + m), o);
      k += m;
      if (o + m < 8) continue;
      const l2 = (this.carry.readUInt32BE(0) & OFFSET_MASK_HI) * TWO32 + ((this.carry.readUInt32BE(4) & OFFSET_MASK_LO) >>> 0);
      if (l2 === 0) continue;
      const index = (at - o) / 8;
      if (index * span >= h.size) continue;
      if (l2 % h.clusterSize !== 0 || this.l1Offsets.length >= MAX_TABLES) {
        this.giveUp(`L1 entry ${index}: L2 table at 0x${l2.toString(16)} (or too many tables)`);
        return n;
      }
      this.l1Offsets.push(l2);
      this.l1Indexes.push(index);
    }
    if (this.pos + n === this.l1End) this.l1Done();
    return n;
  }

  private l1Done(): void {
    const order = this.l1Offsets.map((_, k) => k).sort((a, b) => this.l1Offsets[a]! - this.l1Offsets[b]!);
    this.l2Offsets = Float64Array.from(order, (k) => this.l1Offsets[k]!);
    this.l2Indexes = Uint32Array.from(order, (k) => this.l1Indexes[k]!);
    this.l1Offsets = [];
    this.l1Indexes = [];
    for (let k = 0; k < this.l2Offsets.length; k++) {
      if (this.l2Offsets[k]! < this.l1End || (k > 0 && this.l2Offsets[k] === this.l2Offsets[k - 1])) {
        this.giveUp(`L2 table at 0x${this.l2Offsets[k]!.toString(16)} comes before the end of the L1 table or is shared`);
        return;
      }
    }
  }

  private takeL2(piece: Uint8Array, i: number, avail: number): number {
    const buf = this.l2Buf!;
    const n = Math.min(avail, buf.byteLength - this.l2Have);
    buf.set(piece.subarray(i, i + n), this.l2Have);
    this.l2Have += n;
    if (this.l2Have === buf.byteLength) {
      this.l2Have = -1;
      this.pos += n; // runs are announced relative to the end of the table
      try {
        this.parseL2(buf, this.l2Indexes![this.nextL2++]!);
      } finally {
        this.pos -= n;
      }
    }
    return n;
  }

  /** Announces the data runs of one L2 table (standard 8-byte entries). */
  private parseL2(l2: Buffer, l1Index: number): void {
    const h = this.header!;
    const cs = h.clusterSize;
    const base = l1Index * h.l2Entries * cs;
    for (let e = 0; e < h.l2Entries; e++) {
      const guest = base + e * cs;
      if (guest >= h.size) break;
      const hi = l2.readUInt32BE(e * 8);
      const lo = l2.readUInt32BE(e * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      if (hi & L2_COMPRESSED_HI) return this.giveUp(`compressed cluster at guest 0x${guest.toString(16)}`);
      if (lo & L2_ZERO_LO) {
        if (h.version < 3) return this.giveUp('zero flag in a version 2 image');
        continue;
      }
      const host = (hi & OFFSET_MASK_HI) * TWO32 + ((lo & OFFSET_MASK_LO) >>> 0);
      if (host === 0) continue;
      if (host % cs !== 0) return this.giveUp(`cluster offset 0x${host.toString(16)} is not aligned`);
      const len = Math.min(cs, h.size - guest);
      if (host < this.pos || host < this.lastHostEnd) return this.giveUp(`data cluster at 0x${host.toString(16)} is behind the stream`);
      if (guest < this.lastGuestEnd) return this.giveUp(`data cluster for guest 0x${guest.toString(16)} comes after a higher guest offset`);
      const last = this.runHead + this.runCount - 1;
      if (this.runCount > 0 && this.runHost[last]! + this.runLen[last]! === host && this.runGuest[last]! + this.runLen[last]! === guest) {
        this.runLen[last]! += len;
      } else {
        if (!this.roomForRun()) return this.giveUp(`more than ${MAX_RUNS} data runs ahead of the stream`);
        const k = this.runHead + this.runCount;
        this.runHost[k] = host;
        this.runGuest[k] = guest;
        this.runLen[k] = len;
        this.runCount++;
      }
      this.lastHostEnd = host + len;
      this.lastGuestEnd = guest + len;
    }
  }

  /** Makes room for one more run at the tail (moving the queue to the front, or growing it up to MAX_RUNS). */
  private roomForRun(): boolean {
    if (this.runHead + this.runCount < this.runHost.length) return true;
    const cap = this.runCount < this.runHost.length / 2 ? this.runHost.length : this.runHost.length * 2;
    if (cap > MAX_RUNS) return false;
    const move = (a: Float64Array) => {
      const b = cap === a.length ? a : new Float64Array(cap);
      b.set(a.subarray(this.runHead, this.runHead + this.runCount));
      return b;
    };
    this.runHost = move(this.runHost);
    this.runGuest = move(this.runGuest);
    this.runLen = move(this.runLen);
    this.runHead = 0;
    return true;
  }

  /** Data bytes of the head run at this.pos. */
  private data(piece: Uint8Array, i: number, avail: number, out: Uint8Array[]): number {
    const k = this.runHead;
    const n = Math.min(avail, this.runLen[k]!);
    if (this.l2Offsets && this.nextL2 < this.l2Offsets.length && this.l2Offsets[this.nextL2]! < this.pos + this.runLen[k]!) {
      this.giveUp(`L2 table at 0x${this.l2Offsets[this.nextL2]!.toString(16)} overlaps a data cluster`);
      return 0;
    }
    out.push(piece.subarray(i, i + n));
    this.ops.push(OP_DATA, n, this.streamBytes);
    this.streamBytes += n;
    this.runHost[k]! += n;
    this.runGuest[k]! += n;
    this.runLen[k]! -= n;
    if (this.runLen[k] === 0) {
      this.runHead = this.runCount === 1 ? 0 : k + 1;
      this.runCount--;
    }
    return n;
  }

  /**
   * Ends the stream; returns the digest of the recipe's ops as seen, or
   * undefined when the stream did not follow the layout to the end (the
   * header, the L1 table or an L2 table cut short, data runs not reached).
   */
  end(): string | undefined {
    if (this.gaveUp === undefined) {
      if (!this.header) this.giveUp('the stream ended inside the header');
      else if (this.pos < this.l1End) this.giveUp('the stream ended inside the L1 table');
      else if (this.l2Have >= 0 || (this.l2Offsets && this.nextL2 < this.l2Offsets.length)) this.giveUp('the stream ended before an L2 table');
      else if (this.runCount > 0) this.giveUp('the stream ended before a data cluster');
    }
    return this.gaveUp === undefined ? this.ops.digest() : undefined;
  }
}

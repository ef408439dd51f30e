/**
 * The layout half of the qcow2 index build (index-builder.ts): one walk of
 * the active layer's tables gives the guest extents (data, zero) and the
 * host recipe (which host ranges are guest data, the rest being residue).
 * It reads only tables, no guest data, and is synchronous and CPU-bound, so
 * the server runs it on a worker thread (layout-worker.ts, planOffThread).
 *
 * Its cost is bounded by the file's size, never by what the header claims:
 * - the reader refuses an active L1 table that references more L2 tables
 *   than the file can hold (shared tables, reader.ts), so at most
 *   fileSize / 8 L2 entries are visited;
 * - the guest bytes the data stream would hold (data and compressed clusters)
 *   are capped by guestDataBudget(fileSize): data clusters cannot share host
 *   bytes, and compressed clusters are allowed a generous ratio;
 * - extents and recipe runs live in typed arrays (17 and 24 bytes each), at
 *   most MAX_EXTENTS of them.
 * Past any bound the image is refused with QCOW2_INVALID, and the caller
 * byte-chunks it instead (nothing qemu accepts is ever rejected).
 */
import { SnapyardError } from '../errors.js';
import { EXTENT_DATA, EXTENT_ZERO, OP_DATA, OP_RESIDUE, type Qcow2Layout } from '../blobs/qcow2-index.js';
import { WorkerPool, type WorkerError } from '../worker-pool.js';
import { Qcow2Image } from './reader.js';

/** More extents (or data runs) than this and the image is treated as not understood (byte chunking). */
export const MAX_EXTENTS = 1 << 22;
/** Guest bytes of compressed clusters allowed per byte of file, on top of the data clusters (which are at most the file). */
export const MAX_COMPRESSION_RATIO = 64;
/** Small images may always hold this much guest data. */
const MIN_GUEST_BUDGET = 256 * 1024 * 1024;

/** The most guest data (data + compressed clusters) an image of `fileSize` bytes may describe. */
export function guestDataBudget(fileSize: number): number {
  return MIN_GUEST_BUDGET + (MAX_COMPRESSION_RATIO + 1) * fileSize;
}

/** A qcow2 file's layout: what Qcow2Index needs, plus the file size. */
export interface Qcow2Plan extends Qcow2Layout {
  fileSize: number;
  /** Bytes of the data stream (guest data in guest order). */
  streamSize: number;
}

function refuse(why: string): SnapyardError {
  return new SnapyardError('QCOW2_INVALID', `qcow2: ${why}`);
}

/** A growable column of numbers (typed: 8 bytes a value, no per-element objects). */
class Column {
  private buf = new Float64Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }
  at(i: number): number {
    return this.buf[i]!;
  }
  add(i: number, v: number): void {
    this.buf[i]! += v;
  }
  get last(): number {
    return this.buf[this.length - 1]!;
  }
  done(): Float64Array {
    return this.buf.slice(0, this.length);
  }
}

/** Walks the image's tables; throws QCOW2_INVALID when it is not understood or exceeds a bound. */
export function planLayout(img: Qcow2Image): Qcow2Plan {
  const fileSize = img.fileSize;
  // 1. Guest extents (data + compressed = data, zero) and the data clusters' host runs.
  const gOff = new Column();
  const gLen = new Column();
  const gKind = new Column();
  const hOff = new Column();
  const hLen = new Column();
  const hSrc = new Column();
  let stream = 0;
  for (const e of img.extents(0, img.virtualSize, { maxAllocatedBytes: guestDataBudget(fileSize) })) {
    if (e.kind === 'unallocated') continue;
    const kind = e.kind === 'zero' ? EXTENT_ZERO : EXTENT_DATA;
    const last = gKind.length - 1;
    if (last >= 0 && gKind.at(last) === kind && gOff.at(last) + gLen.at(last) === e.guestOffset) gLen.add(last, e.length);
    else {
      if (gKind.length >= MAX_EXTENTS) throw refuse(`more than ${MAX_EXTENTS} extents`);
      gOff.push(e.guestOffset);
      gLen.push(e.length);
      gKind.push(kind);
    }
    if (e.kind === 'data') {
      const len = Math.min(e.length, fileSize - e.hostOffset!);
      const j = hOff.length - 1;
      if (j >= 0 && hOff.at(j) + hLen.at(j) === e.hostOffset && hSrc.at(j) + hLen.at(j) === stream) hLen.add(j, len);
      else {
        if (hOff.length >= MAX_EXTENTS) throw refuse(`more than ${MAX_EXTENTS} data runs`);
        hOff.push(e.hostOffset!);
        hLen.push(len);
        hSrc.push(stream);
      }
    }
    if (kind === EXTENT_DATA) stream += e.length;
  }
  // 2. The recipe, in host order. Data runs may not share host bytes (each host byte comes from one place).
  const hostOff = hOff.done();
  const order = Uint32Array.from({ length: hostOff.length }, (_, i) => i).sort((a, b) => hostOff[a]! - hostOff[b]!);
  const opKinds = new Column();
  const opLengths = new Column();
  const opSources = new Column();
  let pos = 0;
  for (const j of order) {
    const h = hostOff[j]!;
    if (h < pos) throw refuse(`host bytes at 0x${h.toString(16)} are shared by two guest ranges`);
    if (h > pos) {
      opKinds.push(OP_RESIDUE);
      opLengths.push(h - pos);
      opSources.push(0);
    }
    const k = opKinds.length - 1;
    if (k >= 0 && opKinds.at(k) === OP_DATA && opSources.at(k) + opLengths.at(k) === hSrc.at(j) && h === pos) opLengths.add(k, hLen.at(j));
    else {
      opKinds.push(OP_DATA);
      opLengths.push(hLen.at(j));
      opSources.push(hSrc.at(j));
    }
    pos = h + hLen.at(j);
  }
  if (pos < fileSize) {
    opKinds.push(OP_RESIDUE);
    opLengths.push(fileSize - pos);
    opSources.push(0);
  }
  return {
    fileSize,
    streamSize: stream,
    virtualSize: img.virtualSize,
    clusterSize: img.clusterSize,
    hasBacking: img.backingFile !== undefined,
    extentOffsets: gOff.done(),
    extentLengths: gLen.done(),
    extentKinds: Uint8Array.from(gKind.done()),
    opKinds: Uint8Array.from(opKinds.done()),
    opLengths: opLengths.done(),
    opSources: opSources.done(),
  };
}

/** planLayout of the image at `path` (opened and closed here). */
export function planLayoutOf(path: string): Qcow2Plan {
  const img = Qcow2Image.open(path);
  try {
    return planLayout(img);
  } finally {
    img.close();
  }
}

/** The typed arrays of a plan (transferred, not copied, between threads). */
export function planBuffers(p: Qcow2Plan): ArrayBuffer[] {
  return [p.extentOffsets, p.extentLengths, p.extentKinds, p.opKinds, p.opLengths, p.opSources].map((a) => a.buffer as ArrayBuffer);
}

function revive(e: WorkerError): Error {
  return e.code === 'QCOW2_INVALID' ? new SnapyardError('QCOW2_INVALID', e.message) : new SnapyardError('INTERNAL', `qcow2 layout worker: ${e.message}`);
}

/**
 * planLayoutOf on a worker thread of its own (started for this call, ended
 * after it), so a large or hostile table walk never blocks the event loop.
 */
export async function planOffThread(path: string): Promise<Qcow2Plan> {
  const url = new URL(import.meta.url.endsWith('.ts') ? './layout-worker.ts' : './layout-worker.js', import.meta.url);
  const pool = new WorkerPool<{ path: string }, Qcow2Plan>(url, 1, null, revive);
  try {
    return await pool.run({ path });
  } finally {
    await pool.close();
  }
}

/**
 * Runs planOffThread for many callers with at most `maxConcurrent` worker
 * threads at once (the others wait their turn), so many uploads finishing
 * together cannot start a thread each.
 */
export class LayoutPlanner {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly maxConcurrent = 2) {}

  async plan(path: string): Promise<Qcow2Plan> {
    if (this.running >= this.maxConcurrent) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await planOffThread(path);
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // the slot passes straight to the next caller
      else this.running--;
    }
  }
}

/**
 * Carries a parent image's internal snapshots (qemu `savevm`) into an
 * instance overlay being written over it, so `-loadvm NAME` works on the
 * overlay (qemu looks for the snapshot in the top image only).
 *
 * Each snapshot becomes a snapshot of the overlay with the same id, name,
 * date, VM clock and VM state: its disk view is expressed relative to the
 * overlay's backing file (the parent's current guest view, or `against`
 * when the overlay is written over another image, as an overlay pull of an
 * image with snapshots is): only the clusters where the snapshot's disk
 * differs from the backing file's view are stored; the rest stay
 * unallocated and read through to it when the snapshot is loaded. The VM
 * state is copied as it is.
 *
 * Streaming: one cluster of each view (and 1 MiB of VM state) in memory at a
 * time, whatever the disk or VM state size.
 */
import { dirname, isAbsolute, resolve } from 'node:path';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import { L1View } from '../storage/qcow2/snapshot-view.js';
import { vmStateOffset } from '../storage/qcow2/writer-snapshots.js';
import type { Qcow2Writer } from '../storage/qcow2/writer.js';

export interface CarriedSnapshot {
  id: string;
  name: string;
  vmStateSize: number;
  /** Bytes of the snapshot's disk stored in the overlay (clusters that differ from the parent's current view). */
  diskBytes: number;
}

export interface SkippedSnapshot {
  name: string;
  reason: string;
}

const VM_STATE_CHUNK = 1024 * 1024;
const MAX_CHAIN = 16;

/** Opens an image with its backing chain (qcow2 backing files only), for reads through unallocated clusters. */
function openChain(path: string, depth = 0): Qcow2Image[] {
  const img = Qcow2Image.open(path);
  const chain = [img];
  try {
    if (img.backingFile !== undefined) {
      if (depth >= MAX_CHAIN) throw new Error(`${path}: backing chain deeper than ${MAX_CHAIN}`);
      if (img.backingFormat !== undefined && img.backingFormat !== 'qcow2') throw new Error(`${path}: backing format ${img.backingFormat} is not supported here`);
      const b = isAbsolute(img.backingFile) ? img.backingFile : resolve(dirname(path), img.backingFile);
      const rest = openChain(b, depth + 1);
      img.backing = rest[0];
      chain.push(...rest);
    }
  } catch (e) {
    for (const i of chain) i.close();
    throw e;
  }
  return chain;
}

const isZero = (b: Buffer) => b.every((x) => x === 0);

/**
 * Adds every internal snapshot of `parent` to `writer` (an overlay over
 * `parent` with the same virtual size, no active data written after this
 * call). Snapshots taken at another disk size are skipped (qemu could not
 * express them over this backing file), and so are those of an image with
 * extended L2 entries (L1View does not read them).
 */
export async function carrySnapshots(parent: string, writer: Qcow2Writer, against?: string): Promise<{ carried: CarriedSnapshot[]; skipped: SkippedSnapshot[] }> {
  const chain = openChain(parent);
  const backing = against !== undefined ? openChain(against) : null;
  const img = chain[0]!;
  const carried: CarriedSnapshot[] = [];
  const skipped: SkippedSnapshot[] = [];
  const views: L1View[] = [];
  try {
    if (img.snapshots.length === 0) return { carried, skipped };
    const { header } = img;
    if (header.extendedL2) {
      // The overlay is still made (it boots without -loadvm); the snapshots are reported as not carried.
      return { carried, skipped: img.snapshots.map((s) => ({ name: s.name, reason: 'the image uses extended L2 entries' })) };
    }
    const active = new L1View(parent, header, header.l1TableOffset, header.l1Size, img.backing);
    views.push(active);
    // The overlay's backing view at `off`: the parent's active view, or the other image's (zeros past its end).
    const backingView = (into: Buffer, off: number): void => {
      if (!backing) return active.readInto(into, off);
      const b = backing[0]!;
      const inside = Math.max(0, Math.min(into.length, b.virtualSize - off));
      if (inside > 0) b.readGuestInto(into.subarray(0, inside), off);
      into.fill(0, inside);
    };
    const cs = writer.clusterSize;
    const size = img.virtualSize;
    const a = Buffer.alloc(cs);
    const b = Buffer.alloc(cs);
    for (const s of img.snapshots) {
      if (s.virtualSize !== undefined && s.virtualSize !== size) {
        skipped.push({ name: s.name, reason: `taken at disk size ${s.virtualSize}, the disk is now ${size}` });
        continue;
      }
      const snap = new L1View(parent, header, s.l1TableOffset, s.l1Size, img.backing);
      views.push(snap);
      writer.beginSnapshot({ id: s.id, name: s.name, vmStateSize: s.vmStateSize, dateSec: s.dateSec, dateNsec: s.dateNsec, vmClockNsec: s.vmClockNsec });
      let diskBytes = 0;
      for (let off = 0; off < size; off += cs) {
        const n = Math.min(cs, size - off);
        if (!backing && snap.sameMapping(active, off, n)) continue;
        const sv = b.subarray(0, n);
        snap.readInto(sv, off);
        backingView(a.subarray(0, n), off);
        if (sv.equals(a.subarray(0, n))) continue;
        if (isZero(sv)) await writer.writeZeros(off, n);
        else {
          await writer.writeData(off, sv);
          diskBytes += n;
        }
      }
      const from = vmStateOffset(size, header.clusterBits);
      const to = writer.vmStateOffset;
      const chunk = Buffer.alloc(Math.min(VM_STATE_CHUNK, Math.max(cs, s.vmStateSize)));
      for (let done = 0; done < s.vmStateSize; done += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, s.vmStateSize - done));
        snap.readInto(part, from + done);
        // Whole zero clusters need no host cluster; VM state is read the same either way.
        if (isZero(part)) await writer.writeZeros(to + done, part.length);
        else await writer.writeData(to + done, part);
      }
      carried.push({ id: s.id, name: s.name, vmStateSize: s.vmStateSize, diskBytes });
    }
    return { carried, skipped };
  } finally {
    for (const v of views) v.close();
    for (const i of [...chain, ...(backing ?? [])]) i.close();
  }
}

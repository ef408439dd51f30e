/**
 * The qcow2 internal snapshot table (docs/interop/qcow2.txt, "Snapshots"):
 * nb_snapshots variable-length entries starting at snapshots_offset, each
 * padded to 8 bytes.
 *
 * Bounded like qemu: at most 65536 snapshots, a table of at most 64 MiB, at
 * most 1 KiB of extra data per entry, and every entry (and each snapshot's
 * L1 table) inside the file. Entries are read one at a time, so memory is
 * bounded by what the file really holds, never by a header count.
 */
import { checkTable, invalid, MAX_L1_BYTES, type Qcow2Header } from './format.js';
import type { HostFile } from './host-file.js';

export const MAX_SNAPSHOTS = 65536;
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
const ENTRY_FIXED = 40;

export interface Qcow2Snapshot {
  id: string;
  name: string;
  l1TableOffset: number;
  l1Size: number;
  /** VM state size in bytes (the 64-bit extra field when present, else the 32-bit one). */
  vmStateSize: number;
  /** Guest disk size at the time of the snapshot, when the entry records it (v3 images always do). */
  virtualSize?: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
}

export function readSnapshotTable(file: HostFile, header: Qcow2Header): Qcow2Snapshot[] {
  const { nbSnapshots: count, snapshotsOffset: start, clusterSize } = header;
  if (count === 0) return [];
  if (count > MAX_SNAPSHOTS) throw invalid(`nb_snapshots ${count} is too large (at most ${MAX_SNAPSHOTS})`);
  // Every entry is at least 40 bytes: the whole minimum must fit before anything is read.
  checkTable('snapshots_offset', start, count * ENTRY_FIXED, clusterSize, file.size);

  const snapshots: Qcow2Snapshot[] = [];
  const fixed = Buffer.alloc(ENTRY_FIXED);
  let at = start;
  for (let i = 0; i < count; i++) {
    const what = `snapshot table entry ${i}`;
    file.readExact(fixed, at, what);
    const l1TableOffset = Number(fixed.readBigUInt64BE(0));
    const l1Size = fixed.readUInt32BE(8);
    const idLen = fixed.readUInt16BE(12);
    const nameLen = fixed.readUInt16BE(14);
    const extraLen = fixed.readUInt32BE(36);
    if (extraLen > MAX_SNAPSHOT_EXTRA_DATA) throw invalid(`${what}: extra data size ${extraLen} is too large (at most ${MAX_SNAPSHOT_EXTRA_DATA})`);
    const varLen = extraLen + idLen + nameLen;
    const entryLen = Math.ceil((ENTRY_FIXED + varLen) / 8) * 8;
    if (at + entryLen - start > MAX_SNAPSHOT_TABLE_BYTES) throw invalid(`snapshot table is larger than ${MAX_SNAPSHOT_TABLE_BYTES} bytes at entry ${i}`);
    const rest = file.readExact(Buffer.alloc(varLen), at + ENTRY_FIXED, what);

    if (fixed.readBigUInt64BE(0) > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`${what}: L1 table offset is out of range`);
    if (l1Size * 8 > MAX_L1_BYTES) throw invalid(`${what}: l1_size ${l1Size} is too large`);
    if (l1Size > 0) checkTable(`${what}: L1 table offset`, l1TableOffset, l1Size * 8, clusterSize, file.size);

    let vmStateSize = fixed.readUInt32BE(32);
    let virtualSize: number | undefined;
    if (extraLen >= 8) {
      const v = rest.readBigUInt64BE(0);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`${what}: VM state size 0x${v.toString(16)} is out of range`);
      vmStateSize = Number(v);
    }
    if (extraLen >= 16) {
      const v = rest.readBigUInt64BE(8);
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`${what}: virtual size 0x${v.toString(16)} is out of range`);
      virtualSize = Number(v);
      const needed = Math.ceil(virtualSize / (clusterSize * header.l2Entries));
      if (l1Size < needed) throw invalid(`${what}: l1_size ${l1Size} is too small for its virtual size ${virtualSize}`);
    }
    const snap: Qcow2Snapshot = {
      id: rest.toString('utf8', extraLen, extraLen + idLen),
      name: rest.toString('utf8', extraLen + idLen, varLen),
      l1TableOffset,
      l1Size,
      vmStateSize,
      dateSec: fixed.readUInt32BE(16),
      dateNsec: fixed.readUInt32BE(20),
      vmClockNsec: fixed.readBigUInt64BE(24),
    };
    if (virtualSize !== undefined) snap.virtualSize = virtualSize;
    snapshots.push(snap);
    at += entryLen;
  }
  return snapshots;
}

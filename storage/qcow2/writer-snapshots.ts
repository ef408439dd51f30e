/**
 * Internal snapshots for the qcow2 writer (writer.ts): validation of what a
 * caller hands in, and the encoding of the snapshot table
 * (docs/interop/qcow2.txt, "Snapshots"), entries as qemu writes them for a
 * version 3 image: the 40-byte fixed part, 24 bytes of extra data
 * (vm_state_size_large, disk_size, icount), the id, the name, padded to 8.
 *
 * A snapshot's view is its own guest address space: the disk
 * [0, virtualSize) followed, from the first L1 slot past the disk
 * (vmStateOffset), by the VM state of vmStateSize bytes, as qemu stores it.
 */
import { SnapyardError } from '../errors.js';
import { align8, MAX_L1_BYTES } from './writer-metadata.js';

export interface Qcow2SnapshotInfo {
  /** Unique id string (qemu numbers them "1", "2", ...). */
  id: string;
  /** Unique name (what `-loadvm NAME` and `qemu-img snapshot -l` show). */
  name: string;
  /** Bytes of VM state (0: a disk-only snapshot). */
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: bigint;
  /** Instruction count when the snapshot was taken; -1n (the default) when not recorded. */
  icount?: bigint;
}

const ENTRY_FIXED = 40;
const EXTRA_DATA = 24;
/** qemu's limits (snapshot-table.ts reads with the same bounds). */
export const MAX_SNAPSHOTS = 65536;
const MAX_TABLE_BYTES = 64 * 1024 * 1024;
const MAX_ID_NAME_BYTES = 0xffff;
const TWO32 = 0x1_0000_0000;

function invalid(message: string): SnapyardError {
  return new SnapyardError('INVALID_ARGUMENT', message);
}

/** First guest byte of the VM state area: the first L1 slot that describes no disk cluster. */
export function vmStateOffset(virtualSize: number, clusterBits: number): number {
  const span = 2 ** (clusterBits * 2 - 3); // cluster size * L2 entries
  return Math.ceil(virtualSize / span) * span;
}

/** L1 entries a snapshot's view needs: the disk's, plus the VM state's when there is one. */
export function snapshotL1Size(virtualSize: number, clusterBits: number, vmStateSize: number): number {
  const span = 2 ** (clusterBits * 2 - 3);
  const end = vmStateSize > 0 ? vmStateOffset(virtualSize, clusterBits) + vmStateSize : virtualSize;
  return Math.ceil(end / span);
}

/** Checks a snapshot against the ones already taken; returns the end of its view in guest bytes. */
export function validateSnapshot(info: Qcow2SnapshotInfo, earlier: readonly Qcow2SnapshotInfo[], virtualSize: number, clusterBits: number): number {
  const what = `snapshot ${JSON.stringify(info.name)}`;
  if (earlier.length >= MAX_SNAPSHOTS) throw invalid(`at most ${MAX_SNAPSHOTS} snapshots`);
  for (const [field, v] of [['id', info.id], ['name', info.name]] as const) {
    const n = Buffer.byteLength(v, 'utf8');
    if (n === 0 || n > MAX_ID_NAME_BYTES || v.includes('\0')) throw invalid(`${what}: ${field} must be 1 to ${MAX_ID_NAME_BYTES} bytes without NUL`);
  }
  if (earlier.some((s) => s.name === info.name)) throw invalid(`${what}: a snapshot of that name is already in the image`);
  if (earlier.some((s) => s.id === info.id)) throw invalid(`${what}: id ${JSON.stringify(info.id)} is already in the image`);
  if (!Number.isSafeInteger(info.vmStateSize) || info.vmStateSize < 0) throw invalid(`${what}: bad VM state size ${String(info.vmStateSize)}`);
  for (const [field, v] of [['dateSec', info.dateSec], ['dateNsec', info.dateNsec]] as const) {
    if (!Number.isInteger(v) || v < 0 || v >= TWO32) throw invalid(`${what}: ${field} must be a u32, got ${String(v)}`);
  }
  if (info.vmClockNsec < 0n || info.vmClockNsec >= 1n << 64n) throw invalid(`${what}: vmClockNsec must be a u64`);
  if (info.icount !== undefined && (info.icount < -1n || info.icount >= 1n << 63n)) throw invalid(`${what}: bad icount`);
  const l1Size = snapshotL1Size(virtualSize, clusterBits, info.vmStateSize);
  if (l1Size * 8 > MAX_L1_BYTES) throw invalid(`${what}: ${info.vmStateSize} bytes of VM state need an L1 table larger than qemu allows`);
  return info.vmStateSize > 0 ? vmStateOffset(virtualSize, clusterBits) + info.vmStateSize : virtualSize;
}

function entryLength(info: Qcow2SnapshotInfo): number {
  return align8(ENTRY_FIXED + EXTRA_DATA + Buffer.byteLength(info.id, 'utf8') + Buffer.byteLength(info.name, 'utf8'));
}

/** Bytes of the snapshot table (0 without snapshots). */
export function snapshotTableBytes(snapshots: readonly Qcow2SnapshotInfo[]): number {
  const n = snapshots.reduce((sum, s) => sum + entryLength(s), 0);
  if (n > MAX_TABLE_BYTES) throw invalid(`the snapshot table would be ${n} bytes (qemu's limit is ${MAX_TABLE_BYTES})`);
  return n;
}

/** The snapshot table; `l1Offsets[i]` is where snapshot i's L1 table is in the file. */
export function encodeSnapshotTable(snapshots: readonly Qcow2SnapshotInfo[], l1Offsets: readonly number[], virtualSize: number, clusterBits: number): Buffer {
  const out = Buffer.alloc(snapshotTableBytes(snapshots));
  let at = 0;
  snapshots.forEach((s, i) => {
    const id = Buffer.from(s.id, 'utf8');
    const name = Buffer.from(s.name, 'utf8');
    out.writeBigUInt64BE(BigInt(l1Offsets[i]!), at);
    out.writeUInt32BE(snapshotL1Size(virtualSize, clusterBits, s.vmStateSize), at + 8);
    out.writeUInt16BE(id.length, at + 12);
    out.writeUInt16BE(name.length, at + 14);
    out.writeUInt32BE(s.dateSec, at + 16);
    out.writeUInt32BE(s.dateNsec, at + 20);
    out.writeBigUInt64BE(s.vmClockNsec, at + 24);
    out.writeUInt32BE(s.vmStateSize % TWO32, at + 32); // the low 32 bits, as qemu writes it; the 64-bit field follows
    out.writeUInt32BE(EXTRA_DATA, at + 36);
    out.writeBigUInt64BE(BigInt(s.vmStateSize), at + 40);
    out.writeBigUInt64BE(BigInt(virtualSize), at + 48);
    out.writeBigInt64BE(s.icount ?? -1n, at + 56);
    id.copy(out, at + ENTRY_FIXED + EXTRA_DATA);
    name.copy(out, at + ENTRY_FIXED + EXTRA_DATA + id.length);
    at += entryLength(s);
  });
  return out;
}

/**
 * Hand-built hostile qcow2 files (no qemu: qemu-img would not write them),
 * for the walk-bomb regression tests and the fuzz suite's seeds.
 */
import { writeFileSync } from 'node:fs';

export interface RawQcow2 {
  version?: 2 | 3;
  clusterBits: number;
  virtualSize: number;
  l1Size: number;
  l1Offset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots?: number;
  snapshotsOffset?: number;
  incompatible?: bigint;
}

/** A qcow2 header (v3: 104 bytes + end-of-extensions marker; v2: 72 bytes) at the start of `file`. */
export function writeHeader(file: Buffer, h: RawQcow2): void {
  const v = h.version ?? 3;
  file.write('QFI\xfb', 0, 'latin1');
  file.writeUInt32BE(v, 4);
  file.writeBigUInt64BE(0n, 8); // backing_file_offset
  file.writeUInt32BE(0, 16);
  file.writeUInt32BE(h.clusterBits, 20);
  file.writeBigUInt64BE(BigInt(h.virtualSize), 24);
  file.writeUInt32BE(0, 32); // crypt_method
  file.writeUInt32BE(h.l1Size, 36);
  file.writeBigUInt64BE(BigInt(h.l1Offset), 40);
  file.writeBigUInt64BE(BigInt(h.refcountTableOffset), 48);
  file.writeUInt32BE(h.refcountTableClusters, 56);
  file.writeUInt32BE(h.nbSnapshots ?? 0, 60);
  file.writeBigUInt64BE(BigInt(h.snapshotsOffset ?? 0), 64);
  if (v === 3) {
    file.writeBigUInt64BE(h.incompatible ?? 0n, 72);
    file.writeBigUInt64BE(0n, 80);
    file.writeBigUInt64BE(0n, 88);
    file.writeUInt32BE(4, 96); // refcount_order
    file.writeUInt32BE(104, 100); // header_length
    file.writeBigUInt64BE(0n, 104); // end of header extensions
  }
}

/**
 * The walk bomb of issue 8 (defect 3): an 8 MiB image with 2 MiB clusters
 * and a virtual size of 16383 * 2^39 bytes, every L1 entry pointing at the
 * one L2 table, whose entries are all zero clusters (or, `alternate`, zero
 * and unallocated in turn: one extent per entry). Walked naively that is
 * 16383 * 262144 = 4.3 billion L2 entries.
 */
export function walkBombBytes(alternate = false): Buffer {
  const cs = 1 << 21;
  const l1Size = 16383;
  const file = Buffer.alloc(4 * cs);
  writeHeader(file, { clusterBits: 21, virtualSize: l1Size * 2 ** 39, l1Size, l1Offset: cs, refcountTableOffset: 3 * cs, refcountTableClusters: 1 });
  for (let i = 0; i < l1Size; i++) file.writeBigUInt64BE(BigInt(2 * cs), cs + i * 8);
  const l2 = 2 * cs;
  for (let i = 0; i < cs / 8; i++) if (!alternate || i % 2 === 0) file.writeBigUInt64BE(1n, l2 + i * 8);
  return file;
}

export function writeWalkBomb(path: string, alternate = false): Buffer {
  const b = walkBombBytes(alternate);
  writeFileSync(path, b);
  return b;
}

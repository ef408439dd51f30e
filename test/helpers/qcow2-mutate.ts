/**
 * Shared generators for the qcow2 fuzz suite: small valid seed images built
 * with qemu-img / qemu-io, a map of where each structure of a seed lives
 * (header fields, extensions, L1, L2 entries, compressed descriptors,
 * refcount table and blocks, snapshot table), and fast-check arbitraries of
 * mutations aimed at those structures.
 */
import fc from 'fast-check';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runTool } from './qcow2-fixtures.js';

export interface SeedImage {
  name: string;
  path: string;
  bytes: Buffer;
  regions: Region[];
}

export interface Region {
  what: string;
  offset: number;
  length: number;
  /** Width of the fields in this region (the table entry size). */
  width: 1 | 2 | 4 | 8;
}

/** Header fields: name, offset, width. */
const HEADER_FIELDS: Array<[string, number, 1 | 2 | 4 | 8]> = [
  ['version', 4, 4], ['backing_file_offset', 8, 8], ['backing_file_size', 16, 4], ['cluster_bits', 20, 4], ['size', 24, 8],
  ['crypt_method', 32, 4], ['l1_size', 36, 4], ['l1_table_offset', 40, 8], ['refcount_table_offset', 48, 8],
  ['refcount_table_clusters', 56, 4], ['nb_snapshots', 60, 4], ['snapshots_offset', 64, 8], ['incompatible_features', 72, 8],
  ['compatible_features', 80, 8], ['autoclear_features', 88, 8], ['refcount_order', 96, 4], ['header_length', 100, 4], ['compression_type', 104, 1],
];

const u64 = (b: Buffer, at: number) => Number(b.readBigUInt64BE(at) & 0x00fffffffffffe00n);

/** Where the structures of a (valid) qcow2 image are. */
export function regionsOf(b: Buffer): Region[] {
  const version = b.readUInt32BE(4);
  const cs = 2 ** b.readUInt32BE(20);
  const regions: Region[] = HEADER_FIELDS.filter(([, off]) => version === 3 || off < 72).map(([what, offset, width]) => ({ what: `header.${what}`, offset, length: width, width }));
  const headerLength = version === 3 ? b.readUInt32BE(100) : 72;
  const backingOff = Number(b.readBigUInt64BE(8));
  regions.push({ what: 'header extensions', offset: headerLength, length: Math.max(8, (backingOff || Math.min(cs, 4096)) - headerLength), width: 4 });
  if (backingOff) regions.push({ what: 'backing file name', offset: backingOff, length: Math.max(1, b.readUInt32BE(16)), width: 1 });
  const extendedL2 = version === 3 && (b.readBigUInt64BE(72) & 16n) !== 0n;
  const entry = extendedL2 ? 16 : 8;
  const l1Off = Number(b.readBigUInt64BE(40));
  const l1Size = b.readUInt32BE(36);
  regions.push({ what: 'L1 table', offset: l1Off, length: l1Size * 8, width: 8 });
  for (let i = 0; i < l1Size; i++) {
    const l2 = u64(b, l1Off + i * 8);
    if (l2 === 0 || l2 + cs > b.byteLength) continue;
    regions.push({ what: `L2 table ${i}`, offset: l2, length: cs, width: 8 });
    for (let j = 0; j < cs / entry; j++) {
      const hi = b.readUInt32BE(l2 + j * entry);
      if (hi & 0x40000000) regions.push({ what: `compressed descriptor ${i}.${j}`, offset: l2 + j * entry, length: 8, width: 8 });
    }
  }
  const rtOff = Number(b.readBigUInt64BE(48));
  const rtClusters = b.readUInt32BE(56);
  regions.push({ what: 'refcount table', offset: rtOff, length: rtClusters * cs, width: 8 });
  for (let i = 0; i < (rtClusters * cs) / 8 && rtOff + i * 8 + 8 <= b.byteLength; i++) {
    const block = u64(b, rtOff + i * 8);
    if (block !== 0 && block + cs <= b.byteLength) regions.push({ what: `refcount block ${i}`, offset: block, length: cs, width: 2 });
  }
  const nbSnap = b.readUInt32BE(60);
  if (nbSnap > 0) {
    const snapOff = Number(b.readBigUInt64BE(64));
    regions.push({ what: 'snapshot table', offset: snapOff, length: Math.min(cs, b.byteLength - snapOff), width: 4 });
    regions.push({ what: 'snapshot 0 fixed fields', offset: snapOff, length: 40, width: 4 });
  }
  return regions.filter((r) => r.offset >= 0 && r.length > 0 && r.offset + r.width <= b.byteLength);
}

/** One edit of an image. */
export type Mutation =
  | { op: 'set'; region: number; index: number; value: bigint }
  | { op: 'flip'; region: number; index: number; bit: number }
  | { op: 'bytes'; region: number; index: number; data: Uint8Array }
  /** Every L1 entry points at the same L2 table as entry `index` (the walk-bomb shape). */
  | { op: 'shareL2'; index: number }
  | { op: 'truncate'; keep: number };

const TWO64 = 1n << 64n;

/** Values that hit edges: zero, all ones, sign bits, 2^53, sizes near the file's and the cluster's. */
function interesting(fileSize: number): fc.Arbitrary<bigint> {
  const f = BigInt(fileSize);
  return fc.oneof(
    fc.constantFrom(0n, 1n, 2n, 7n, 8n, 9n, 16n, 21n, 22n, 0x200n, 0x10000n, 0x7fffffffn, 0x80000000n, 0xffffffffn, 1n << 32n, 1n << 53n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n, TWO64 - 1n),
    fc.constantFrom(f, f - 512n, f + 512n, f - 65536n, f * 2n, f / 2n),
    // L2-entry shapes: compressed (bit 62), copied (bit 63), zero (bit 0), with an offset inside the file.
    fc.tuple(fc.constantFrom(0n, 1n << 62n, 1n << 63n, (1n << 63n) | 1n, 1n), fc.bigInt({ min: 0n, max: f })).map(([flags, off]) => flags | (off & ~0x1ffn)),
    fc.bigInt({ min: 0n, max: TWO64 - 1n }),
  );
}

export function mutationArb(seed: SeedImage): fc.Arbitrary<Mutation> {
  const n = seed.regions.length;
  const region = fc.nat({ max: n - 1 });
  const index = fc.nat({ max: 1 << 20 });
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ op: fc.constant('set' as const), region, index, value: interesting(seed.bytes.byteLength) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('flip' as const), region, index, bit: fc.nat({ max: 63 }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('bytes' as const), region, index, data: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('shareL2' as const), index: fc.nat({ max: 64 }) }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), keep: fc.double({ min: 0, max: 1, noNaN: true }).map((x) => x) }) },
  );
}

/** Applies mutations to a copy of the seed. */
export function mutate(seed: SeedImage, ms: Mutation[]): Buffer {
  let b = Buffer.from(seed.bytes);
  for (const m of ms) {
    if (m.op === 'truncate') {
      b = b.subarray(0, Math.floor(b.byteLength * m.keep));
      continue;
    }
    if (m.op === 'shareL2') {
      if (b.byteLength < 48) continue;
      const l1Off = Number(b.readBigUInt64BE(40) & 0xffffffffn);
      const l1Size = Math.min(b.readUInt32BE(36), 1 << 16);
      if (l1Off + l1Size * 8 > b.byteLength || l1Size === 0) continue;
      const pick = b.readBigUInt64BE(l1Off + (m.index % l1Size) * 8);
      for (let i = 0; i < l1Size; i++) b.writeBigUInt64BE(pick === 0n ? BigInt(l1Off) | (1n << 63n) : pick, l1Off + i * 8);
      continue;
    }
    const r = seed.regions[m.region % seed.regions.length]!;
    const slots = Math.max(1, Math.floor(r.length / r.width));
    const at = r.offset + (m.index % slots) * r.width;
    if (at + r.width > b.byteLength) continue;
    if (m.op === 'set') {
      const mod = 1n << BigInt(8 * r.width);
      const v = ((m.value % mod) + mod) % mod;
      if (r.width === 8) b.writeBigUInt64BE(v, at);
      else if (r.width === 4) b.writeUInt32BE(Number(v), at);
      else if (r.width === 2) b.writeUInt16BE(Number(v), at);
      else b[at] = Number(v);
    } else if (m.op === 'flip') {
      const byte = at + (Math.floor(m.bit / 8) % r.width);
      b[byte]! ^= 1 << (m.bit % 8);
    } else {
      const n = Math.min(m.data.byteLength, b.byteLength - at);
      b.set(m.data.subarray(0, n), at);
    }
  }
  return b;
}

/** Small valid seed images (a few hundred KiB each), built with qemu. */
export async function makeSeedImages(dir: string): Promise<Array<{ name: string; path: string }>> {
  const io = async (path: string, cmds: string[]) => runTool('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), path]);
  const create = async (name: string, opts: string, size = '2M') => {
    const path = join(dir, `${name}.qcow2`);
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opts, path, size]);
    return path;
  };
  const writes = ['write -q -P 0x11 0 64k', 'write -q -P 0x22 300k 100k', 'write -q -z 512k 64k', 'write -q -P 0x33 1M 4k', 'write -q -P 0x44 1984k 64k'];
  const seeds: Array<{ name: string; path: string }> = [];
  const v3 = await create('v3-64k', 'cluster_size=65536');
  await io(v3, writes);
  seeds.push({ name: 'v3-64k', path: v3 });
  const v2 = await create('v2-4k', 'compat=0.10,cluster_size=4096');
  await io(v2, writes.filter((w) => !w.includes('-z')));
  seeds.push({ name: 'v2-4k', path: v2 });
  const small = await create('v3-512', 'cluster_size=512', '256k');
  await io(small, ['write -q -P 0x55 0 3k', 'write -q -z 8k 1k', 'write -q -P 0x66 100k 700']);
  seeds.push({ name: 'v3-512', path: small });
  const ext = await create('extl2', 'cluster_size=65536,extended_l2=on');
  await io(ext, ['write -q -P 0x77 0 6k', 'write -q -z 8k 4k', 'write -q -P 0x78 200k 2k']);
  seeds.push({ name: 'extl2', path: ext });
  for (const [name, type] of [['zlib', 'zlib'], ['zstd', 'zstd']] as const) {
    const path = join(dir, `${name}.qcow2`);
    await runTool('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `cluster_size=4096,compression_type=${type}`, v3, path]);
    seeds.push({ name: `compressed-${name}`, path });
  }
  const snap = join(dir, 'snap.qcow2');
  await copyFile(v2, snap);
  await runTool('qemu-img', ['amend', '-q', '-o', 'compat=1.1', snap]);
  await runTool('qemu-img', ['snapshot', '-c', 'snap1', snap]);
  await io(snap, ['write -q -P 0x99 0 8k']);
  seeds.push({ name: 'snapshot', path: snap });
  const overlay = join(dir, 'overlay.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v3-64k.qcow2', '-F', 'qcow2', overlay]);
  await io(overlay, ['write -q -P 0xaa 64k 64k']);
  seeds.push({ name: 'overlay', path: overlay });
  return seeds;
}

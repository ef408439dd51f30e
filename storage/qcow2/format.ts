/**
 * qcow2 on-disk format: constants and the header parser (qemu's
 * docs/interop/qcow2.txt, versions 2 and 3).
 *
 * Everything here works on the first cluster of the image, which holds the
 * header, the header extensions and the backing file name. Every field is
 * checked before it is used: a value a reader cannot trust (out of range, past
 * the end of the file, a feature we cannot read) is a SnapyardError
 * 'QCOW2_INVALID' naming the field and its value.
 *
 * Refused on purpose: encryption (crypt_method != 0), external data files
 * (incompatible bit 2 or the external data file extension), images marked
 * corrupt (incompatible bit 1; qemu still opens those read-only), and unknown
 * incompatible feature bits. The dirty bit is reported, not refused: reading
 * does not need the refcounts it says may be stale.
 */
import { SnapyardError } from '../errors.js';

/** "QFI\xfb", big-endian. */
export const QCOW2_MAGIC = 0x514649fb;
export const QCOW2_MAGIC_BYTES = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

export const MIN_CLUSTER_BITS = 9;
/** qemu's implementation limit (2 MiB clusters). */
export const MAX_CLUSTER_BITS = 21;
/** Extended L2 entries need 512-byte subclusters at least: 32 * 512 = 16 KiB clusters. */
export const MIN_CLUSTER_BITS_EXTENDED_L2 = 14;
export const SUBCLUSTERS_PER_CLUSTER = 32;

export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
/** Offset of the compression_type byte (v3, present when header_length > 104). */
export const COMPRESSION_TYPE_OFFSET = 104;
/** Bytes read before the cluster size is known: the fixed v3 fields and compression_type. */
export const HEADER_PREFIX_LENGTH = 112;

/** qemu's limits: the active L1 table is at most 32 MiB, the refcount table 8 MiB. */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024;
export const MAX_BACKING_FILE_NAME = 1023;
/** qemu keeps the backing format in a 16-byte buffer. */
export const MAX_BACKING_FORMAT_LENGTH = 15;

export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;
export const FEATURE_TABLE_ENTRY_SIZE = 48;

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;
export type CompressionType = 'zlib' | 'zstd';

/** L1 and standard L2 entries: bits 9-55 are the host offset. */
export const OFFSET_MASK_HI = 0x00ffffff;
export const OFFSET_MASK_LO = 0xfffffe00;
/** L2 entry flags, in the high 32 bits of the big-endian entry. */
export const L2_COPIED_HI = 0x80000000;
export const L2_COMPRESSED_HI = 0x40000000;
/** Standard cluster descriptor bit 0 (v3 without extended L2): reads as zeros. */
export const L2_ZERO_LO = 0x1;

export interface FeatureName {
  /** 0 incompatible, 1 compatible, 2 autoclear. */
  type: number;
  bit: number;
  name: string;
}

export interface HeaderExtension {
  type: number;
  /** File offset of the extension's data. */
  offset: number;
  length: number;
}

export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  clusterSize: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: CompressionType;
  /** Incompatible bit 0: refcounts may be stale (reading is unaffected). */
  dirty: boolean;
  /** Incompatible bit 4: 128-bit L2 entries with 32 subclusters per cluster. */
  extendedL2: boolean;
  lazyRefcounts: boolean;
  /** L2 entries per L2 table (one cluster). */
  l2Entries: number;
  /** L1 entries the virtual size needs (l1Size may be larger). */
  l1EntriesNeeded: number;
  backingFile?: string;
  backingFormat?: string;
  featureNames: FeatureName[];
  /** Extensions other than the end marker, in file order (bitmaps and unknown ones included, not interpreted). */
  extensions: HeaderExtension[];
}

export function invalid(message: string): SnapyardError {
  return new SnapyardError('QCOW2_INVALID', `qcow2: ${message}`);
}

const hex = (n: number | bigint) => `0x${n.toString(16)}`;

/** A u64 field as a number; values past 2^53 are refused (no real file is that large). */
function u64(buf: Buffer, at: number, field: string): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`${field} ${hex(v)} is out of range`);
  return Number(v);
}

/** True when `buf` starts with the qcow2 magic. */
export function hasQcow2Magic(buf: Uint8Array): boolean {
  return buf.byteLength >= 4 && buf[0] === 0x51 && buf[1] === 0x46 && buf[2] === 0x49 && buf[3] === 0xfb;
}

/**
 * Checks the magic, version and cluster_bits from the first bytes of a file
 * (HEADER_PREFIX_LENGTH, fewer if the file is shorter); returns the cluster
 * size, i.e. how much to read for parseHeader.
 */
export function clusterSizeFromPrefix(prefix: Buffer, fileSize: number): number {
  if (!hasQcow2Magic(prefix)) throw invalid('not a qcow2 image (bad magic)');
  if (fileSize < V2_HEADER_LENGTH || prefix.byteLength < V2_HEADER_LENGTH) throw invalid(`file of ${fileSize} bytes is too short for a header`);
  const version = prefix.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw invalid(`unsupported version ${version}`);
  const clusterBits = prefix.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw invalid(`cluster_bits ${clusterBits} is out of range (${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS})`);
  }
  return 2 ** clusterBits;
}

/** Checks that a table of `bytes` bytes at `offset` is cluster aligned and inside the file. */
export function checkTable(field: string, offset: number, bytes: number, clusterSize: number, fileSize: number): void {
  if (offset % clusterSize !== 0) throw invalid(`${field} ${hex(offset)} is not aligned to the cluster size ${clusterSize}`);
  if (offset === 0 && bytes > 0) throw invalid(`${field} is 0 (the header cluster)`);
  if (offset + bytes > fileSize) throw invalid(`${field} ${hex(offset)} + ${bytes} bytes is past the end of the file (${fileSize} bytes)`);
}

/**
 * Parses the header in `first` (the first cluster of the file, zero-filled
 * past the end of a shorter file). `fileSize` bounds every table offset.
 */
export function parseHeader(first: Buffer, fileSize: number): Qcow2Header {
  const clusterSize = clusterSizeFromPrefix(first, fileSize);
  if (first.byteLength < clusterSize) throw new RangeError('parseHeader needs the whole first cluster');
  const version = first.readUInt32BE(4) as 2 | 3;
  const clusterBits = first.readUInt32BE(20);

  const backingFileOffset = u64(first, 8, 'backing_file_offset');
  const backingFileSize = first.readUInt32BE(16);
  const size = u64(first, 24, 'size');
  const cryptMethod = first.readUInt32BE(32);
  const l1Size = first.readUInt32BE(36);
  const l1TableOffset = u64(first, 40, 'l1_table_offset');
  const refcountTableOffset = u64(first, 48, 'refcount_table_offset');
  const refcountTableClusters = first.readUInt32BE(56);
  const nbSnapshots = first.readUInt32BE(60);
  const snapshotsOffset = u64(first, 64, 'snapshots_offset');

  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let headerLength = V2_HEADER_LENGTH;
  let compressionByte = COMPRESSION_ZLIB;
  if (version === 3) {
    incompatibleFeatures = first.readBigUInt64BE(72);
    compatibleFeatures = first.readBigUInt64BE(80);
    autoclearFeatures = first.readBigUInt64BE(88);
    refcountOrder = first.readUInt32BE(96);
    headerLength = first.readUInt32BE(100);
    if (headerLength < V3_MIN_HEADER_LENGTH) throw invalid(`header_length ${headerLength} is less than ${V3_MIN_HEADER_LENGTH}`);
    if (headerLength > clusterSize) throw invalid(`header_length ${headerLength} exceeds the cluster size ${clusterSize}`);
    if (refcountOrder > 6) throw invalid(`refcount_order ${refcountOrder} is larger than 6`);
    if (headerLength > COMPRESSION_TYPE_OFFSET) compressionByte = first[COMPRESSION_TYPE_OFFSET]!;
  }

  if (cryptMethod !== 0) {
    throw invalid(`encrypted images are not supported (crypt_method ${cryptMethod}: ${cryptMethod === 1 ? 'AES' : cryptMethod === 2 ? 'LUKS' : 'unknown'})`);
  }

  // Header extensions: from the end of the header to the backing file name (or the end of the cluster).
  if (backingFileOffset > clusterSize) throw invalid(`backing_file_offset ${hex(backingFileOffset)} is outside the first cluster (${clusterSize} bytes)`);
  const extEnd = backingFileOffset !== 0 ? backingFileOffset : clusterSize;
  const featureNames: FeatureName[] = [];
  const extensions: HeaderExtension[] = [];
  let backingFormat: string | undefined;
  let at = headerLength;
  while (at < extEnd) {
    if (at + 8 > extEnd) throw invalid(`header extension at ${hex(at)} runs past ${hex(extEnd)}`);
    const type = first.readUInt32BE(at);
    const length = first.readUInt32BE(at + 4);
    const data = at + 8;
    if (length > extEnd - data) throw invalid(`header extension ${hex(type)} at ${hex(at)}: length ${length} runs past ${hex(extEnd)}`);
    if (type === EXT_END) break;
    extensions.push({ type, offset: data, length });
    if (type === EXT_BACKING_FORMAT) {
      if (length > MAX_BACKING_FORMAT_LENGTH) throw invalid(`backing file format extension length ${length} is too large (max ${MAX_BACKING_FORMAT_LENGTH})`);
      backingFormat = first.toString('utf8', data, data + length);
    } else if (type === EXT_FEATURE_TABLE) {
      for (let e = data; e + FEATURE_TABLE_ENTRY_SIZE <= data + length; e += FEATURE_TABLE_ENTRY_SIZE) {
        const raw = first.subarray(e + 2, e + FEATURE_TABLE_ENTRY_SIZE);
        const nul = raw.indexOf(0);
        featureNames.push({ type: first[e]!, bit: first[e + 1]!, name: raw.toString('utf8', 0, nul < 0 ? raw.length : nul) });
      }
    } else if (type === EXT_DATA_FILE) {
      throw invalid(`external data files are not supported (data file "${first.toString('utf8', data, data + Math.min(length, 256))}")`);
    }
    // Bitmaps, the crypto header pointer (crypt_method is 0 here) and unknown extensions: not needed to read guest data.
    at = data + Math.ceil(length / 8) * 8;
  }

  // Incompatible features (after the feature name table, so unknown bits can be named).
  const featureName = (bit: bigint) => featureNames.find((f) => f.type === 0 && BigInt(f.bit) === bit)?.name;
  const unknown = incompatibleFeatures & ~INCOMPAT_KNOWN;
  if (unknown !== 0n) {
    const bits: string[] = [];
    for (let b = 0n; b < 64n; b++) {
      if (unknown & (1n << b)) bits.push(featureName(b) ? `${b} (${featureName(b)})` : `${b}`);
    }
    throw invalid(`unknown incompatible feature bits ${bits.join(', ')} (incompatible_features ${hex(incompatibleFeatures)})`);
  }
  if (incompatibleFeatures & INCOMPAT_CORRUPT) throw invalid('the image is marked corrupt (incompatible feature bit 1); run qemu-img check -r all');
  if (incompatibleFeatures & INCOMPAT_DATA_FILE) throw invalid('external data files are not supported (incompatible feature bit 2)');
  const extendedL2 = (incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  if (extendedL2 && clusterBits < MIN_CLUSTER_BITS_EXTENDED_L2) {
    throw invalid(`extended L2 entries need cluster_bits >= ${MIN_CLUSTER_BITS_EXTENDED_L2}, got ${clusterBits}`);
  }
  let compressionType: CompressionType;
  if (compressionByte === COMPRESSION_ZLIB) compressionType = 'zlib';
  else if (compressionByte === COMPRESSION_ZSTD) compressionType = 'zstd';
  else throw invalid(`unknown compression_type ${compressionByte}`);
  const compressionBit = (incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n;
  if (compressionBit !== (compressionByte !== COMPRESSION_ZLIB)) {
    throw invalid(`compression_type ${compressionByte} does not match the compression type feature bit (${compressionBit ? 'set' : 'clear'})`);
  }

  // Backing file name, inside the first cluster.
  let backingFile: string | undefined;
  if (backingFileOffset !== 0) {
    if (backingFileOffset < headerLength) throw invalid(`backing_file_offset ${hex(backingFileOffset)} overlaps the header (${headerLength} bytes)`);
    const max = Math.min(MAX_BACKING_FILE_NAME, clusterSize - backingFileOffset);
    if (backingFileSize > max) throw invalid(`backing_file_size ${backingFileSize} is too large (at most ${max} bytes here)`);
    // An empty name means no backing file (as in qemu).
    if (backingFileSize > 0) backingFile = first.toString('utf8', backingFileOffset, backingFileOffset + backingFileSize);
  }

  // Tables. The virtual size must be addressable by the L1 table, and the L1 table must be within qemu's limit.
  const l2Entries = clusterSize / (extendedL2 ? 16 : 8);
  const bytesPerL1Entry = clusterSize * l2Entries;
  const l1EntriesNeeded = Math.ceil(size / bytesPerL1Entry);
  if (l1Size * 8 > MAX_L1_BYTES) throw invalid(`l1_size ${l1Size} is too large (the L1 table may be at most ${MAX_L1_BYTES} bytes)`);
  if (l1Size < l1EntriesNeeded) throw invalid(`l1_size ${l1Size} is too small for the virtual size ${size} (needs ${l1EntriesNeeded} entries)`);
  if (l1Size > 0) checkTable('l1_table_offset', l1TableOffset, l1Size * 8, clusterSize, fileSize);
  const maxRefcountClusters = MAX_REFCOUNT_TABLE_BYTES / clusterSize;
  if (refcountTableClusters > maxRefcountClusters) {
    throw invalid(`refcount_table_clusters ${refcountTableClusters} is too large (at most ${maxRefcountClusters})`);
  }
  checkTable('refcount_table_offset', refcountTableOffset, refcountTableClusters * clusterSize, clusterSize, fileSize);
  // The snapshot table itself is read (and bounded) by snapshot-table.ts.

  const header: Qcow2Header = {
    version,
    backingFileOffset,
    backingFileSize,
    clusterBits,
    clusterSize,
    size,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
    dirty: (incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    extendedL2,
    lazyRefcounts: (compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
    l2Entries,
    l1EntriesNeeded,
    featureNames,
    extensions,
  };
  if (backingFile !== undefined) header.backingFile = backingFile;
  if (backingFormat !== undefined) header.backingFormat = backingFormat;
  return header;
}

/**
 * Compressed cluster descriptor (bits 0-61 of an L2 entry with bit 62 set),
 * given as the entry's high and low 32 bits: host offset in the low
 * x = 62 - (cluster_bits - 8) bits, then the number of additional 512-byte
 * sectors. Returns the host offset and the byte count to read (from the
 * offset to the end of the last sector), as qemu computes them.
 */
export function decodeCompressed(hi: number, lo: number, clusterBits: number): { offset: number; size: number } {
  const x = 62 - (clusterBits - 8); // 49 (2 MiB clusters) .. 61 (512 B)
  const hiOffsetBits = x - 32;
  const offset = (hi & ((1 << hiOffsetBits) - 1)) * 2 ** 32 + (lo >>> 0);
  const sectors = ((hi >>> hiOffsetBits) & ((1 << (clusterBits - 8)) - 1)) + 1;
  return { offset, size: sectors * 512 - (offset % 512) };
}

/**
 * `snapyard inspect FILE [--json]`: facts about a local disk image.
 *
 * For a qcow2 file (qcow2 magic): the header facts, the active layer's guest
 * layout in bytes (allocated = data + compressed extents, zero, unallocated)
 * and FastCDC chunk statistics over the guest view of the allocated data:
 * the guest bytes of the data and compressed extents, in guest order,
 * concatenated into one stream (zero and unallocated ranges are skipped), so
 * two images with the same guest data get the same statistics whatever their
 * host layout or compression. For any other file: its size and the same
 * statistics over its bytes ("raw").
 *
 * Memory stays flat: the data is streamed in 4 MiB pieces through the
 * chunker and only the set of chunk digests is kept.
 *
 * --json prints one object. Keys (all sizes in bytes):
 *   file                  the path as given
 *   format                "qcow2" | "raw"
 *   qcow2 only:
 *     version             2 | 3
 *     virtualSize         guest disk size
 *     clusterSize
 *     fileSize            size of the image file
 *     backingFile         string | null
 *     backingFormat       string | null
 *     compressionType     "zlib" | "zstd"
 *     extendedL2          boolean (subclusters)
 *     dirty               boolean (refcounts may be stale)
 *     allocatedBytes      guest bytes in data + compressed extents
 *     zeroBytes           guest bytes in zero extents
 *     unallocatedBytes    guest bytes not in this image (backing file or zeros)
 *     compressedClusters  number of compressed clusters
 *     snapshots           { count, names: string[] } (internal snapshots)
 *   raw only:
 *     size                file size
 *   chunks                { count, bytes, unique, uniqueBytes, avgSize }
 *                         FastCDC (default parameters) over the allocated guest
 *                         data (qcow2) or the file (raw); unique/uniqueBytes
 *                         count distinct sha256 digests (dedup within the image);
 *                         avgSize = bytes / count, rounded (0 without chunks)
 */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { SnapyardError } from '../storage/errors.js';
import { chunkStream, DEFAULT_FASTCDC } from '../storage/blobs/fastcdc.js';
import { guestDataBudget } from '../storage/qcow2/layout-plan.js';
import { Qcow2Image, type WalkOptions } from '../storage/qcow2/reader.js';

const MiB = 1024 * 1024;
/** Guest bytes read at once. */
const PIECE = 4 * MiB;

export interface ChunkStats {
  count: number;
  bytes: number;
  unique: number;
  uniqueBytes: number;
  avgSize: number;
}

export interface Qcow2Report {
  file: string;
  format: 'qcow2';
  version: 2 | 3;
  virtualSize: number;
  clusterSize: number;
  fileSize: number;
  backingFile: string | null;
  backingFormat: string | null;
  compressionType: string;
  extendedL2: boolean;
  dirty: boolean;
  allocatedBytes: number;
  zeroBytes: number;
  unallocatedBytes: number;
  compressedClusters: number;
  snapshots: { count: number; names: string[] };
  chunks: ChunkStats;
}

export interface RawReport {
  file: string;
  format: 'raw';
  size: number;
  chunks: ChunkStats;
}

export type InspectReport = Qcow2Report | RawReport;

/** Chunk statistics of a byte stream (FastCDC default parameters); keeps only the digests. */
async function chunkStats(source: AsyncIterable<Uint8Array>): Promise<ChunkStats> {
  const seen = new Set<string>();
  let count = 0;
  let bytes = 0;
  let uniqueBytes = 0;
  for await (const c of chunkStream(source, DEFAULT_FASTCDC, { copy: false })) {
    const digest = createHash('sha256').update(c.data).digest('base64');
    count++;
    bytes += c.length;
    if (!seen.has(digest)) {
      seen.add(digest);
      uniqueBytes += c.length;
    }
  }
  return { count, bytes, unique: seen.size, uniqueBytes, avgSize: count === 0 ? 0 : Math.round(bytes / count) };
}

/**
 * Guest bytes of the data and compressed extents, in guest order. One buffer
 * is reused: chunkStream copies a piece into its window before asking for the next.
 */
async function* allocatedGuestData(img: Qcow2Image, walk: WalkOptions): AsyncGenerator<Uint8Array> {
  const buf = Buffer.allocUnsafe(PIECE);
  for (const e of img.extents(0, img.virtualSize, walk)) {
    if (e.kind !== 'data' && e.kind !== 'compressed') continue;
    for (let off = e.guestOffset; off < e.guestOffset + e.length; off += PIECE) {
      const n = Math.min(PIECE, e.guestOffset + e.length - off);
      const piece = buf.subarray(0, n);
      img.readGuestInto(piece, off);
      yield piece;
    }
  }
}

async function inspectQcow2(path: string): Promise<Qcow2Report> {
  const img = Qcow2Image.open(path);
  try {
    let allocatedBytes = 0;
    let zeroBytes = 0;
    let unallocatedBytes = 0;
    let compressedClusters = 0;
    // Bounded by the file's size (a hostile table walk is refused: QCOW2_INVALID).
    const walk: WalkOptions = { maxAllocatedBytes: guestDataBudget(img.fileSize) };
    for (const e of img.extents(0, img.virtualSize, walk)) {
      if (e.kind === 'data') allocatedBytes += e.length;
      else if (e.kind === 'compressed') {
        allocatedBytes += e.length;
        compressedClusters++;
      } else if (e.kind === 'zero') zeroBytes += e.length;
      else unallocatedBytes += e.length;
    }
    const h = img.header;
    const chunks = await chunkStats(allocatedGuestData(img, walk));
    return {
      file: path,
      format: 'qcow2',
      version: h.version,
      virtualSize: img.virtualSize,
      clusterSize: img.clusterSize,
      fileSize: img.fileSize,
      backingFile: img.backingFile ?? null,
      backingFormat: img.backingFormat ?? null,
      compressionType: h.compressionType,
      extendedL2: h.extendedL2,
      dirty: h.dirty,
      allocatedBytes,
      zeroBytes,
      unallocatedBytes,
      compressedClusters,
      snapshots: { count: img.snapshots.length, names: img.snapshots.map((s) => s.name) },
      chunks,
    };
  } finally {
    img.close();
  }
}

/** The report for a local file (qcow2 by magic, raw otherwise). */
export async function inspectReport(path: string): Promise<InspectReport> {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new SnapyardError('NOT_FOUND', `${path}: no such file`);
    throw e;
  }
  if (!st.isFile()) throw new SnapyardError('INVALID_ARGUMENT', `${path}: not a regular file`);
  if (Qcow2Image.sniff(path)) return inspectQcow2(path);
  const chunks = await chunkStats(createReadStream(path, { highWaterMark: PIECE }));
  return { file: path, format: 'raw', size: st.size, chunks };
}

const size = (n: number): string => `${n} (${(n / MiB).toFixed(2)} MiB)`;

function humanLines(r: InspectReport): Array<[string, string]> {
  const lines: Array<[string, string]> = [
    ['file', r.file],
    ['format', r.format],
  ];
  if (r.format === 'qcow2') {
    lines.push(
      ['version', String(r.version)],
      ['virtual size', size(r.virtualSize)],
      ['cluster size', String(r.clusterSize)],
      ['file size', size(r.fileSize)],
      ['backing file', r.backingFile ?? '-'],
      ['backing format', r.backingFormat ?? '-'],
      ['compression type', r.compressionType],
      ['extended L2', r.extendedL2 ? 'yes' : 'no'],
      ['dirty', r.dirty ? 'yes' : 'no'],
      ['allocated', size(r.allocatedBytes)],
      ['zero', size(r.zeroBytes)],
      ['unallocated', size(r.unallocatedBytes)],
      ['compressed clusters', String(r.compressedClusters)],
      ['snapshots', r.snapshots.count === 0 ? '0' : `${r.snapshots.count} (${r.snapshots.names.join(', ')})`],
    );
  } else {
    lines.push(['size', size(r.size)]);
  }
  const c = r.chunks;
  lines.push(
    ['chunks', String(c.count)],
    ['chunked bytes', size(c.bytes)],
    ['unique chunks', String(c.unique)],
    ['unique bytes', size(c.uniqueBytes)],
    ['avg chunk size', String(c.avgSize)],
  );
  return lines;
}

/** `snapyard inspect FILE [--json]`. */
export async function inspectFile(path: string, opts: { json?: boolean }, out: NodeJS.WritableStream = process.stdout): Promise<InspectReport> {
  const r = await inspectReport(path);
  if (opts.json) {
    out.write(`${JSON.stringify(r)}\n`);
  } else {
    const lines = humanLines(r);
    const width = Math.max(...lines.map(([k]) => k.length)) + 1;
    out.write(lines.map(([k, v]) => `${`${k}:`.padEnd(width)} ${v}\n`).join(''));
  }
  return r;
}

/**
 * Streaming qcow2 v3 writer (spec: qemu's docs/interop/qcow2.txt). Used by the
 * client to rebuild images: a standalone qcow2, or an overlay that holds only
 * the clusters that differ from a local backing file (unwritten clusters stay
 * unallocated and read from the backing file; writeZeros marks clusters that
 * read zeros whatever the backing file holds).
 *
 * Layout of the file, in host clusters (C = cluster size):
 *
 *   0                    header (v3, 112 bytes), backing-format extension, end of extensions, backing file name
 *   1 .. D               guest data, appended in the order it is written (a partial last cluster is zero-padded)
 *   next N               the L2 tables, one per L1 slot with at least one entry, in slot order
 *   next L1C             the L1 table (l1_size = ceil(guest clusters / (C/8)))
 *   then, per internal snapshot (beginSnapshot), its L2 tables and L1 table,
 *   then the snapshot table (writer-snapshots.ts)
 *   next RT              the refcount table
 *   next RB              the refcount blocks (refcount_order 4: C/2 16-bit refcounts each)
 *
 * Every cluster of the file is used exactly once, so every refcount is 1 and
 * every active L1/L2 entry that points at a cluster carries the COPIED flag
 * (bit 63). A snapshot's data is its own (written after beginSnapshot, in
 * the snapshot's guest order, VM state included), never shared with the
 * active view: guest clusters a snapshot leaves unwritten read from the
 * backing file once the snapshot is loaded.
 * Zero clusters are L2 entries with only the zero flag (bit 0), no host cluster.
 * RB and RT count clusters that include themselves: they are the least fixed
 * point of total = 1 + D + N + L1C + RT + RB, RB = ceil(total / (C/2)),
 * RT = ceil(RB * 8 / C) (writer-metadata.ts: refcountClusters).
 *
 * Memory stays flat: the mapping is kept as runs of clusters (8 bytes per run;
 * a run of data needs no host offset since data is appended in guest order),
 * plus a 4 MiB buffer that coalesces small writes into one write(). All
 * metadata is produced at finish(), after the data. The image is written to
 * `<path>.<random>.tmp` in the same directory, fsync'ed and renamed into
 * place, so `path` never holds a half-written image.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { SnapyardError } from '../errors.js';
import { MAX_L1_BYTES, RunList, WRITE_BUFFER_BYTES, headerClusterBytes, writeFully, writeMetadata, type ImageParams, type View } from './writer-metadata.js';
import { encodeSnapshotTable, snapshotL1Size, validateSnapshot, vmStateOffset, type Qcow2SnapshotInfo } from './writer-snapshots.js';

export type { Qcow2SnapshotInfo } from './writer-snapshots.js';

export interface Qcow2WriterOptions {
  /** Virtual disk size in bytes, a multiple of 512. */
  virtualSize: number;
  /** log2 of the cluster size, 9 (512 B) to 21 (2 MiB); default 16 (64 KiB). */
  clusterBits?: number;
  /** Backing file name, stored as given (a relative name is relative to the image's directory, as qemu resolves it). */
  backingFile?: string;
  /** Backing file format (e.g. 'qcow2', 'raw'), written as the backing-format header extension (0xe2792aca). Needs backingFile. */
  backingFormat?: string;
}

export interface Qcow2WriteResult {
  /** Host clusters holding guest data. */
  dataClusters: number;
  /** Guest clusters marked as reading zeros (no host cluster). */
  zeroClusters: number;
  /** Size of the finished file in bytes. */
  fileSize: number;
}

const MAX_BACKING_NAME = 1023;
/** qemu reads the backing format into a 16-byte C string. */
const MAX_BACKING_FORMAT = 15;
/** Guest cluster indices are kept as u32. */
const MAX_GUEST_CLUSTERS = 0xffffffff;

function invalid(message: string): SnapyardError {
  return new SnapyardError('INVALID_ARGUMENT', message);
}

function validateOptions(opts: Qcow2WriterOptions): ImageParams {
  const { virtualSize } = opts;
  const clusterBits = opts.clusterBits ?? 16;
  if (!Number.isSafeInteger(virtualSize) || virtualSize < 0 || virtualSize % 512 !== 0) {
    throw invalid(`virtualSize must be a non-negative multiple of 512 bytes, got ${String(virtualSize)}`);
  }
  if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 21) {
    throw invalid(`clusterBits must be an integer from 9 (512 B clusters) to 21 (2 MiB), got ${String(clusterBits)}`);
  }
  const cs = 2 ** clusterBits;
  const guestClusters = Math.ceil(virtualSize / cs);
  const l1Bytes = Math.ceil(guestClusters / (cs / 8)) * 8;
  if (guestClusters > MAX_GUEST_CLUSTERS || l1Bytes > MAX_L1_BYTES) {
    throw invalid(`virtualSize ${virtualSize} is too large for ${cs}-byte clusters (qemu allows an L1 table of at most ${MAX_L1_BYTES} bytes)`);
  }
  const p: ImageParams = { virtualSize, clusterBits };
  if (opts.backingFile !== undefined) {
    const name = Buffer.from(opts.backingFile, 'utf8');
    if (name.length === 0 || name.length > MAX_BACKING_NAME || opts.backingFile.includes('\0')) {
      throw invalid(`backingFile must be 1 to ${MAX_BACKING_NAME} bytes without NUL, got ${JSON.stringify(opts.backingFile)}`);
    }
    p.backingFile = name;
  }
  if (opts.backingFormat !== undefined) {
    if (opts.backingFile === undefined) throw invalid('backingFormat needs a backingFile');
    if (!/^[A-Za-z0-9_.+-]{1,15}$/.test(opts.backingFormat)) {
      throw invalid(`backingFormat must be a format name of 1 to ${MAX_BACKING_FORMAT} characters, got ${JSON.stringify(opts.backingFormat)}`);
    }
    p.backingFormat = Buffer.from(opts.backingFormat, 'ascii');
  }
  const headerBytes = headerClusterBytes(p);
  if (headerBytes > cs) throw invalid(`the header and backing file name (${headerBytes} bytes) do not fit in one ${cs}-byte cluster`);
  return p;
}

type State = 'open' | 'finishing' | 'finished' | 'aborted';

export class Qcow2Writer {
  private readonly cs: number;
  /** The view being written: the active disk, then each snapshot in turn. */
  private view: View;
  private readonly active: View;
  private readonly snapshotViews: View[] = [];
  private readonly snapshots: Qcow2SnapshotInfo[] = [];
  /** End of the current view's guest address space (the disk, or a snapshot's disk and VM state). */
  private viewEnd: number;
  /** First guest cluster that may still be written. */
  private nextCluster = 0;
  private dataClusters = 0;
  private zeroClusters = 0;
  /** Host offset of the next data cluster (data starts after the header cluster). */
  private dataEnd: number;
  /** Coalesces small data writes: `staged` bytes that go at host offset `stageStart`. */
  private stage: Buffer | undefined;
  private staged = 0;
  private stageStart = 0;
  /** File I/O, serialized in call order. */
  private queue: Promise<void> = Promise.resolve();
  private failure: unknown;
  private state: State = 'open';
  private finishing: Promise<Qcow2WriteResult> | undefined;

  private constructor(
    private readonly path: string,
    private readonly tmpPath: string,
    private fh: FileHandle | undefined,
    private readonly params: ImageParams,
  ) {
    this.cs = 2 ** params.clusterBits;
    this.dataEnd = this.cs;
    this.active = { runs: new RunList(), dataClusters: 0, l1Size: Math.ceil(Math.ceil(params.virtualSize / this.cs) / (this.cs / 8)) };
    this.view = this.active;
    this.viewEnd = params.virtualSize;
  }

  /** Starts an image at `path` (written to a temp file beside it until finish()). */
  static async create(path: string, opts: Qcow2WriterOptions): Promise<Qcow2Writer> {
    const params = validateOptions(opts);
    const tmpPath = join(dirname(path), `${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
    const fh = await open(tmpPath, 'wx');
    return new Qcow2Writer(path, tmpPath, fh, params);
  }

  /** The temporary file the image is written to until finish(). */
  get tempPath(): string {
    return this.tmpPath;
  }

  get clusterSize(): number {
    return this.cs;
  }

  /**
   * Guest data for a cluster-aligned run (length a multiple of the cluster
   * size, except possibly at the end of the disk). Clusters must be written
   * in increasing guest order, each at most once. `data` may be reused once
   * the returned promise settles. Calls need not be awaited one by one: they
   * are applied in call order.
   */
  writeData(guestOffset: number, data: Uint8Array): Promise<void> {
    try {
      const clusters = this.claim('writeData', guestOffset, data.length);
      this.view.runs.push(guestOffset / this.cs, clusters, false);
      this.view.dataClusters += clusters;
      this.dataClusters += clusters;
      const hostOffset = this.dataEnd;
      this.dataEnd += clusters * this.cs;
      return this.enqueue(() => this.append(data, hostOffset, clusters * this.cs));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Marks a cluster-aligned range as reading zeros (v3 zero flag, no host cluster). Same rules as writeData. */
  writeZeros(guestOffset: number, length: number): Promise<void> {
    try {
      const clusters = this.claim('writeZeros', guestOffset, length);
      this.view.runs.push(guestOffset / this.cs, clusters, true);
      this.zeroClusters += clusters;
      return this.enqueue(() => Promise.resolve());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** First guest byte of a snapshot's VM state (the first L1 slot past the disk), as qemu places it. */
  get vmStateOffset(): number {
    return vmStateOffset(this.params.virtualSize, this.params.clusterBits);
  }

  /**
   * Ends the current view (the active disk, or the previous snapshot) and
   * starts an internal snapshot: the writeData/writeZeros calls that follow
   * fill the snapshot's own view, in increasing guest order again from 0:
   * its disk [0, virtualSize) (clusters left unwritten read from the backing
   * file when the snapshot is loaded) and its VM state at
   * [vmStateOffset, vmStateOffset + info.vmStateSize).
   */
  beginSnapshot(info: Qcow2SnapshotInfo): void {
    this.checkOpen('beginSnapshot');
    const { virtualSize, clusterBits } = this.params;
    const end = validateSnapshot(info, this.snapshots, virtualSize, clusterBits);
    this.snapshots.push({ ...info });
    this.view = { runs: new RunList(), dataClusters: 0, l1Size: snapshotL1Size(virtualSize, clusterBits, info.vmStateSize) };
    this.snapshotViews.push(this.view);
    this.viewEnd = end;
    this.nextCluster = 0;
  }

  /**
   * Writes the L2 tables, the L1 table, the refcount structures and the
   * header; fsyncs; renames the temp file to `path` (replacing any file
   * there) and fsyncs the directory. On failure the temp file is removed.
   */
  finish(): Promise<Qcow2WriteResult> {
    try {
      this.checkOpen('finish');
    } catch (e) {
      return Promise.reject(e);
    }
    this.state = 'finishing';
    this.finishing = this.doFinish();
    return this.finishing;
  }

  /** Removes the temp file, leaving nothing behind. Idempotent; a no-op once finish() succeeded. */
  async abort(): Promise<void> {
    if (this.state === 'finishing') await this.finishing?.catch(() => undefined);
    if (this.state === 'finished' || this.state === 'aborted') return;
    this.state = 'aborted';
    await this.queue;
    await this.discard();
  }

  // -------------------------------------------------------------------------

  private async doFinish(): Promise<Qcow2WriteResult> {
    try {
      await this.queue;
      if (this.failure !== undefined) throw this.failure;
      await this.flushStage();
      const fh = this.fh!;
      const { virtualSize, clusterBits } = this.params;
      const fileSize = await writeMetadata(fh, this.params, this.active, {
        views: this.snapshotViews,
        encodeTable: (l1Offsets) => encodeSnapshotTable(this.snapshots, l1Offsets, virtualSize, clusterBits),
      });
      await fh.sync();
      this.fh = undefined;
      await fh.close();
      await rename(this.tmpPath, this.path);
      await syncDir(dirname(this.path));
      this.state = 'finished';
      return { dataClusters: this.dataClusters, zeroClusters: this.zeroClusters, fileSize };
    } catch (e) {
      this.state = 'aborted';
      await this.discard();
      throw e;
    }
  }

  private checkOpen(op: string): void {
    if (this.state !== 'open') throw invalid(`${op}: the writer is already ${this.state}`);
    if (this.failure !== undefined) throw this.failure;
  }

  /** Validates a range of guest bytes and takes its clusters; returns how many. */
  private claim(op: string, guestOffset: number, length: number): number {
    this.checkOpen(op);
    const { cs } = this;
    const virtualSize = this.viewEnd;
    if (!Number.isSafeInteger(guestOffset) || guestOffset < 0) throw invalid(`${op}: bad guest offset ${String(guestOffset)}`);
    if (!Number.isSafeInteger(length) || length <= 0) throw invalid(`${op}: length must be a positive integer, got ${String(length)}`);
    if (guestOffset % cs !== 0) throw invalid(`${op}: guest offset ${guestOffset} is not aligned to the cluster size (${cs})`);
    const end = guestOffset + length;
    if (end > virtualSize) throw invalid(`${op}: ${length} bytes at guest offset ${guestOffset} end beyond the virtual size (${virtualSize})`);
    if (this.view !== this.active && end > Math.ceil(this.params.virtualSize / cs) * cs && guestOffset < this.vmStateOffset) {
      throw invalid(`${op}: ${length} bytes at guest offset ${guestOffset} fall between the disk's end and the VM state (${this.vmStateOffset})`);
    }
    if (length % cs !== 0 && end !== virtualSize && end !== this.params.virtualSize) {
      throw invalid(`${op}: length ${length} is not a multiple of the cluster size (${cs}); only the last cluster of the disk may be partial`);
    }
    const first = guestOffset / cs;
    if (first < this.nextCluster) {
      throw invalid(`${op}: guest offset ${guestOffset} is below ${this.nextCluster * cs}, already written: clusters must come in increasing order, each once`);
    }
    const clusters = Math.ceil(length / cs);
    this.nextCluster = first + clusters;
    return clusters;
  }

  /** Runs `op` after every earlier one; the first failure fails the writer. */
  private enqueue(op: () => Promise<void>): Promise<void> {
    const p = this.queue.then(() => {
      if (this.failure !== undefined) throw this.failure;
      return op();
    });
    this.queue = p.catch((e: unknown) => {
      this.failure ??= e;
    });
    return p;
  }

  /** Appends data, zero-padded to `padded` bytes, at `hostOffset` (right after the previous data). */
  private async append(data: Uint8Array, hostOffset: number, padded: number): Promise<void> {
    if (padded <= WRITE_BUFFER_BYTES / 2) {
      if (this.staged + padded > WRITE_BUFFER_BYTES) await this.flushStage();
      this.stage ??= Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
      if (this.staged === 0) this.stageStart = hostOffset;
      this.stage.set(data, this.staged);
      this.stage.fill(0, this.staged + data.length, this.staged + padded);
      this.staged += padded;
      return;
    }
    await this.flushStage();
    await writeFully(this.fh!, data, hostOffset);
    if (padded > data.length) await writeFully(this.fh!, Buffer.alloc(padded - data.length), hostOffset + data.length);
  }

  private async flushStage(): Promise<void> {
    if (this.staged === 0 || !this.stage) return;
    const n = this.staged;
    this.staged = 0;
    await writeFully(this.fh!, this.stage.subarray(0, n), this.stageStart);
  }

  private async discard(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    if (fh) await fh.close().catch(() => undefined);
    await rm(this.tmpPath, { force: true });
  }
}

/**
 * Makes the rename durable. Best effort: the image is complete and in place
 * by then, so a filesystem that cannot fsync a directory is not an error.
 */
async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // ignored (see above)
  }
}

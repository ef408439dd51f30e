/**
 * Decompression of qcow2 compressed clusters, bounded to one cluster.
 *
 * zlib: a raw deflate stream (qemu uses windowBits -12). As in qemu, the input
 * is the descriptor's sector range, which may end with bytes of the next
 * compressed cluster; decompression stops once a full cluster is produced, and
 * anything but exactly one cluster of output is an error.
 *
 * zstd: one (or, as qemu reads it, several) zstd frames, streamed into a
 * cluster-sized buffer; the window is capped so a hostile frame header
 * cannot make the decoder allocate more than a few MiB.
 */
import { constants, inflateRawSync } from 'node:zlib';
import binding from 'zstd-napi/binding.js';
import type { CompressionType } from './format.js';
import { invalid } from './format.js';

/** 4 MiB: twice the largest cluster qemu allows. */
const ZSTD_WINDOW_LOG_MAX = 22;

export class ClusterDecompressor {
  private dctx: InstanceType<typeof binding.DCtx> | undefined;

  constructor(
    readonly type: CompressionType,
    readonly clusterSize: number,
  ) {}

  /** Decompresses `src` into `out` (exactly clusterSize bytes). `where` names the cluster in errors. */
  decompress(src: Buffer, out: Buffer, where: string): void {
    if (out.byteLength !== this.clusterSize) throw new RangeError('output must be one cluster');
    if (this.type === 'zlib') this.zlib(src, out, where);
    else this.zstd(src, out, where);
  }

  private zlib(src: Buffer, out: Buffer, where: string): void {
    let raw: Buffer;
    try {
      // Z_SYNC_FLUSH: a stream that is cut short but already gave a full cluster is accepted (qemu accepts Z_BUF_ERROR with a full output).
      raw = inflateRawSync(src, { maxOutputLength: this.clusterSize, finishFlush: constants.Z_SYNC_FLUSH });
    } catch (e) {
      const err = e as { code?: string; message: string };
      const why = err.code === 'ERR_BUFFER_TOO_LARGE' ? 'more than one cluster of output' : err.message;
      throw invalid(`compressed cluster ${where}: zlib: ${why}`);
    }
    if (raw.byteLength !== this.clusterSize) throw invalid(`compressed cluster ${where}: zlib gave ${raw.byteLength} bytes, expected ${this.clusterSize}`);
    raw.copy(out);
  }

  private zstd(src: Buffer, out: Buffer, where: string): void {
    if (!this.dctx) {
      this.dctx = new binding.DCtx();
      this.dctx.setParameter(binding.DParameter.windowLogMax, ZSTD_WINDOW_LOG_MAX);
    }
    const dctx = this.dctx;
    dctx.reset(binding.ResetDirective.sessionOnly);
    let produced = 0;
    let consumed = 0;
    let pending = 1;
    try {
      // qemu's loop: go on while the output is not full and each step makes progress.
      while (produced < out.byteLength) {
        const [ret, wrote, read] = dctx.decompressStream(out.subarray(produced), src.subarray(consumed));
        pending = ret;
        produced += wrote;
        consumed += read;
        if (wrote === 0 && read === 0) break;
      }
    } catch (e) {
      dctx.reset(binding.ResetDirective.sessionOnly);
      throw invalid(`compressed cluster ${where}: zstd: ${(e as Error).message}`);
    }
    if (produced !== out.byteLength) throw invalid(`compressed cluster ${where}: zstd gave ${produced} bytes, expected ${out.byteLength}`);
    if (pending !== 0) throw invalid(`compressed cluster ${where}: zstd frame holds more than one cluster`);
  }
}

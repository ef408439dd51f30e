/**
 * Bodies of the delta push protocol (docs/delta-protocol.md), built by hand
 * for tests that send hostile ones: compact indexes, upload frame streams,
 * zstd bombs, and a server with chosen limits.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { compress } from 'zstd-napi';
import binding from 'zstd-napi/binding.js';
import { ChunkIndex } from '../../storage/blobs/chunk-index.js';
import { sha256, sha256Raw, type Digest } from '../../storage/digest.js';
import { DEFAULT_FASTCDC } from '../../storage/blobs/fastcdc.js';
import type { Limits } from '../../storage/limits.js';
import { uploadFrameHeader } from '../../storage/protocol/wire.js';
import { startTestServer, type TestServer } from './server.js';

export type LimitedServer = TestServer;

/** A real server on loopback whose store has the given limits. */
export function startLimitedServer(limits: Partial<Limits> = {}, opts: { dataDir?: string; workers?: number } = {}): Promise<TestServer> {
  return startTestServer({ ...opts, storeLimits: limits });
}

/** The `_missing` body: zstd(8-byte header with the prefix width, then the index with `width`-byte digests). */
export function compactBody(index: { encode(width?: number): Buffer }, width = 8): Buffer {
  const head = Buffer.alloc(8);
  head[0] = width;
  return compress(Buffer.concat([head, index.encode(width)]), { compressionLevel: 3 });
}

/** A byte-chunk index listing `chunks` (each used `times[i]` times, in turn) for a blob named `blobDigest`. */
export function repeatingIndex(chunks: Buffer[], times: number[], blobDigest: Digest = sha256(Buffer.from('claimed'))): ChunkIndex {
  const n = times.reduce((a, b) => a + b, 0);
  const digests = Buffer.allocUnsafe(n * 32);
  const lengths = new Uint32Array(n);
  let at = 0;
  let size = 0;
  chunks.forEach((c, i) => {
    const raw = sha256Raw(c);
    for (let k = 0; k < times[i]!; k++, at++) {
      raw.copy(digests, at * 32);
      lengths[at] = c.byteLength;
      size += c.byteLength;
    }
  });
  return new ChunkIndex(blobDigest, size, DEFAULT_FASTCDC, digests, lengths);
}

/** The `_upload` body: one zstd stream of frames (sha256, u32 length, raw bytes). */
export function uploadBody(chunks: Buffer[]): Buffer {
  return compress(Buffer.concat(chunks.flatMap((c) => [uploadFrameHeader(sha256Raw(c), c.byteLength), c])), { compressionLevel: 1 });
}

/**
 * A zstd stream that expands to `outBytes` of zeros (RLE blocks: ~4 bytes per
 * 128 KiB), built without holding the output.
 */
export function zstdBomb(outBytes: number): Buffer {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, 1);
  const zeros = Buffer.alloc(4 * 1024 * 1024);
  const out: Buffer[] = [];
  const dst = Buffer.allocUnsafe(binding.cStreamOutSize());
  let left = outBytes;
  while (left > 0) {
    const n = Math.min(left, zeros.byteLength);
    left -= n;
    let src = zeros.subarray(0, n);
    const end = left === 0;
    for (;;) {
      const [ret, produced, consumed] = cctx.compressStream2(dst, src, end ? binding.EndDirective.end : binding.EndDirective.continue);
      out.push(Buffer.from(dst.subarray(0, produced)));
      src = src.subarray(consumed);
      if (src.byteLength === 0 && (end ? ret === 0 : produced < dst.byteLength)) break;
    }
  }
  return Buffer.concat(out);
}

/** Peak resident memory of this process since the last reset (Linux: VmHWM), in bytes. */
export function peakRss(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.memoryUsage().rss;
}

/** Resets the peak (writes 5 to /proc/self/clear_refs); false when the kernel does not let us. */
export function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

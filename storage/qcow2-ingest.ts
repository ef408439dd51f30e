/**
 * Ingest of a qcow2 blob that arrives as a byte stream (an OCI upload, from
 * skopeo or anything else): the bytes are spooled to a temporary file (the
 * guest view needs random access to the image), hashed on the way; once the
 * digest and size check out, the guest view and host recipe are chunked from
 * the file (qcow2/index-builder.ts; the table walk on a worker thread,
 * qcow2/layout-plan.ts). An image the reader does not understand
 * is byte-chunked from the same file instead, so nothing qemu accepts is ever
 * rejected. The spool file is removed whatever happens.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ingestBytes, type IngestOptions, type IngestResult } from './blob-ingest.js';
import type { ChunkStore } from './chunk-store.js';
import { localDigester } from './digest.js';
import { isSnapyardError, SnapyardError } from './errors.js';
import { DEFAULT_FASTCDC } from './fastcdc.js';
import { buildQcow2Index } from './qcow2/index-builder.js';
import { planOffThread } from './qcow2/layout-plan.js';
import { pinningWriter } from './chunk-pins.js';

const SPOOL_WRITE = 4 * 1024 * 1024;

export async function ingestQcow2(store: ChunkStore, source: AsyncIterable<Uint8Array>, opts: IngestOptions & { spoolDir: string }): Promise<IngestResult> {
  await mkdir(opts.spoolDir, { recursive: true });
  const path = join(opts.spoolDir, `${randomUUID()}.spool`);
  try {
    // Hashed on this thread (it only copies bytes meanwhile); two buffers, so one is written while the other fills.
    const digester = localDigester();
    const fh = await open(path, 'wx');
    const writing: Array<Promise<unknown> | null> = [null, null];
    try {
      const bufs = [Buffer.allocUnsafe(SPOOL_WRITE), Buffer.allocUnsafe(SPOOL_WRITE)];
      let cur = 0;
      let fill = 0;
      let pos = 0;
      const flush = async () => {
        if (fill === 0) return;
        const w = fh.write(bufs[cur]!, 0, fill, pos);
        w.catch(() => {}); // awaited below; never an unhandled rejection if we stop early
        writing[cur] = w;
        pos += fill;
        fill = 0;
        cur ^= 1;
        if (writing[cur]) await writing[cur]; // the other buffer's write is done before it is refilled
        writing[cur] = null;
      };
      for await (const piece of source) {
        digester.update(piece);
        if (opts.expectSize !== undefined && digester.size > opts.expectSize) {
          throw new SnapyardError('SIZE_INVALID', `blob is larger than the declared ${opts.expectSize} bytes`);
        }
        for (let i = 0; i < piece.byteLength; ) {
          const n = Math.min(SPOOL_WRITE - fill, piece.byteLength - i);
          bufs[cur]!.set(piece.subarray(i, i + n), fill);
          fill += n;
          i += n;
          if (fill === SPOOL_WRITE) await flush();
        }
      }
      await flush();
      await Promise.all(writing);
    } finally {
      await Promise.allSettled(writing.filter((w) => w !== null));
      await fh.close();
    }
    const size = digester.size;
    const digest = await digester.digest();
    if (opts.expectDigest !== undefined && digest !== opts.expectDigest) {
      throw new SnapyardError('DIGEST_INVALID', `content hashes to ${digest}, not ${opts.expectDigest}`, {
        detail: { expected: opts.expectDigest, actual: digest },
      });
    }
    if (opts.expectSize !== undefined && size !== opts.expectSize) {
      throw new SnapyardError('SIZE_INVALID', `blob has ${size} bytes, ${opts.expectSize} were declared`);
    }
    const writer = pinningWriter(store.writer(), opts.lease);
    let index;
    try {
      // The table walk runs on a worker thread (its cost is bounded by the file's size, but may still be seconds).
      const plan = await planOffThread(path);
      index = await buildQcow2Index(path, writer, { blobDigest: digest, params: opts.params ?? DEFAULT_FASTCDC, plan });
    } catch (e) {
      await writer.finish().catch(() => {});
      if (!isSnapyardError(e, 'QCOW2_INVALID')) throw e;
      // Not understood: the exact bytes, byte-chunked.
      return await ingestBytes(store, createReadStream(path, { highWaterMark: SPOOL_WRITE }), { ...opts, expectDigest: digest, expectSize: size });
    }
    let { newChunks, newStoredBytes } = await writer.finish();
    const stored = await store.add(index.encode());
    opts.lease?.pin(stored.digest);
    if (stored.written) {
      newChunks++;
      newStoredBytes += stored.storedSize;
    }
    await store.flush();
    return { digest, size, index, indexDigest: stored.digest, chunks: index.count, newChunks, newStoredBytes, layout: 'qcow2' };
  } finally {
    await rm(path, { force: true });
  }
}

/**
 * Ingest of a qcow2 blob that arrives as a byte stream (an OCI upload, from
 * skopeo or anything else): the bytes are spooled to a temporary file (the
 * guest view needs random access to the image), hashed on the way; once the
 * digest and size check out, the guest view and host recipe are chunked from
 * the file (qcow2/index-builder.ts; the table walk on a worker thread,
 * qcow2/layout-plan.ts). An image the reader does not understand
 * is byte-chunked from the same file instead, so nothing qemu accepts is ever
 * rejected. A tar layer whose first member is a qcow2 is chunked over that
 * member's guest view (storage/tar/tar-qcow2.ts), from a copy of the member.
 * The spool files are removed whatever happens.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ingestBytes, type IngestOptions, type IngestResult } from './bytes-ingest.js';
import type { ChunkStore } from '../chunks/chunk-store.js';
import { localDigester } from '../digest.js';
import { isSnapyardError, SnapyardError } from '../errors.js';
import { DEFAULT_FASTCDC } from './fastcdc.js';
import { buildQcow2Index } from '../qcow2/index-builder.js';
import { LayoutPlanner } from '../qcow2/layout-plan.js';
import { pinningWriter } from '../coord/chunk-pins.js';
import { spoolToFile } from '../spool-file.js';
import { copyMember, tarQcow2Member, wrapMemberIndex } from '../tar/tar-qcow2.js';

const SPOOL_WRITE = 4 * 1024 * 1024;

/**
 * One layout planner per chunk store (at most two table walks on worker
 * threads at once per store): kept beside the store it serves, and gone
 * with it, without widening the ingest options every caller passes.
 */
const planners = new WeakMap<ChunkStore, LayoutPlanner>();

function plannerOf(store: ChunkStore): LayoutPlanner {
  let p = planners.get(store);
  if (!p) planners.set(store, (p = new LayoutPlanner()));
  return p;
}

export async function ingestQcow2(store: ChunkStore, source: AsyncIterable<Uint8Array>, opts: IngestOptions & { spoolDir: string }): Promise<IngestResult> {
  await mkdir(opts.spoolDir, { recursive: true });
  const path = join(opts.spoolDir, `${randomUUID()}.spool`);
  try {
    // Hashed on this thread as the pieces are spooled (spool-file.ts: ~1 MiB held at most, none once the stream stalls).
    const digester = localDigester();
    await spoolToFile(path, source, (piece) => {
      digester.update(piece);
      if (opts.expectSize !== undefined && digester.size > opts.expectSize) {
        throw new SnapyardError('SIZE_INVALID', `blob is larger than the declared ${opts.expectSize} bytes`);
      }
    });
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
    // A tar layer whose first member is the qcow2 (seed-style images): the member's guest view, the tar around it as residue.
    const member = await tarQcow2Member(path, size);
    const image = member ? `${path}.member` : path;
    if (member) await copyMember(path, member, image);
    const writer = pinningWriter(store.writer(), opts.lease);
    let index;
    try {
      // The table walk runs on a worker thread (its cost is bounded by the file's size, but may still be seconds).
      const plan = await plannerOf(store).plan(image);
      index = await buildQcow2Index(image, writer, { blobDigest: digest, params: opts.params ?? DEFAULT_FASTCDC, plan });
      if (member) index = await wrapMemberIndex(index, member, path, size, digest, writer);
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
    await Promise.all([rm(path, { force: true }), rm(`${path}.member`, { force: true })]);
  }
}

/**
 * Ingest of a qcow2 blob that arrives as a byte stream (an OCI upload, from
 * skopeo or anything else). The bytes are spooled to a temporary file and
 * hashed as they come; for the common layout (qemu-img convert, create +
 * writes in disk order: qcow2/stream-classifier.ts) the guest view is
 * chunked at the same time, from the pieces as they pass, so the index is
 * ready when the last byte is. Once the digest and size check out, the
 * layout plan of the spooled file (qcow2/layout-plan.ts, on a worker thread)
 * decides: when the stream's recipe is the plan's, the streamed data chunks
 * are the index's and only the residue (tables, header: small) is chunked
 * from the file; otherwise (a shuffled host layout, compressed clusters,
 * internal snapshots, a tar layer, anything the stream did not follow) the
 * guest view is chunked from the file (qcow2/index-builder.ts), as it always
 * was, with the same result. An image the reader does not understand is
 * byte-chunked from the same file instead, so nothing qemu accepts is ever
 * rejected. A tar layer whose first member is a qcow2 is chunked over that
 * member's guest view (storage/tar/tar-qcow2.ts), from a copy of the member.
 * The spool files are removed whatever happens.
 */
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ingestBytes, type IngestOptions, type IngestResult } from './bytes-ingest.js';
import { ChunkIndexBuilder } from './chunk-index.js';
import type { ChunkStore, ChunkWriter } from '../chunks/chunk-store.js';
import { localDigester } from '../digest.js';
import { isSnapyardError, SnapyardError } from '../errors.js';
import { chunkStream, DEFAULT_FASTCDC, type FastCDCParams } from './fastcdc.js';
import { buildQcow2Index, chunkResidue, layoutOf } from '../qcow2/index-builder.js';
import { LayoutPlanner, planLayoutOf } from '../qcow2/layout-plan.js';
import { opsDigestOf, StreamClassifier } from '../qcow2/stream-classifier.js';
import { Qcow2Index } from './qcow2-index.js';
import { pinningWriter } from '../coord/chunk-pins.js';
import { SpoolFile } from '../spool-file.js';
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

export interface Qcow2IngestResult extends IngestResult {
  /** True when the data chunks were cut while the upload streamed in (else from the spooled file). */
  streamed: boolean;
  /** Why the stream was not used, when it was not. */
  fallback?: string;
}

/** What spooling (and chunking on the way) left: the blob's size and digest, the streamed data chunks. */
interface Received {
  size: number;
  digest: `sha256:${string}`;
  data: ChunkIndexBuilder;
  classifier: StreamClassifier;
}

/** Spools `source` to `path`, hashing it and chunking the guest data the classifier finds in it; checks digest and size. */
async function receive(store: ChunkStore, source: AsyncIterable<Uint8Array>, path: string, writer: ChunkWriter, opts: IngestOptions, params: FastCDCParams): Promise<Received> {
  const digester = store.digester?.() ?? localDigester();
  const classifier = new StreamClassifier(opts.expectSize);
  const data = new ChunkIndexBuilder(params);
  const spool = await SpoolFile.create(path);
  async function* dataPieces(): AsyncGenerator<Uint8Array> {
    for await (const piece of source) {
      const wait = digester.update(piece);
      if (wait) await wait;
      if (opts.expectSize !== undefined && digester.size > opts.expectSize) {
        throw new SnapyardError('SIZE_INVALID', `blob is larger than the declared ${opts.expectSize} bytes`);
      }
      await spool.write(piece);
      if (classifier.following) yield* classifier.feed(piece);
    }
  }
  try {
    // Chunks are views of the chunker's window: the writer copies what it keeps before we move on.
    for await (const c of chunkStream(dataPieces(), params, { copy: false })) {
      if (classifier.following) data.push((await writer.add(c.data)).digest, c.length);
    }
    await spool.close();
  } catch (e) {
    await spool.dispose();
    // Ends the stream on a worker digester too (it keeps each open stream's hash state until then).
    await digester.digest().catch(() => {});
    throw e;
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
  return { size, digest, data, classifier };
}

export async function ingestQcow2(store: ChunkStore, source: AsyncIterable<Uint8Array>, opts: IngestOptions & { spoolDir: string }): Promise<Qcow2IngestResult> {
  await mkdir(opts.spoolDir, { recursive: true });
  const path = join(opts.spoolDir, `${randomUUID()}.spool`);
  const params = opts.params ?? DEFAULT_FASTCDC;
  const writer = pinningWriter(store.writer(), opts.lease);
  try {
    let got: Received;
    try {
      got = await receive(store, source, path, writer, opts, params);
    } catch (e) {
      // Let in-flight writes finish before reporting, so nothing races the caller's clean-up.
      await writer.finish().catch(() => {});
      throw e;
    }
    const { size, digest, classifier } = got;
    const seen = classifier.end();
    let fallback = classifier.gaveUp;
    let index: Qcow2Index;
    try {
      // A tar layer whose first member is the qcow2 (seed-style images): the member's guest view, the tar around it as residue.
      const member = seen === undefined ? await tarQcow2Member(path, size) : null;
      const image = member ? `${path}.member` : path;
      if (member) await copyMember(path, member, image);
      // The table walk runs on a worker thread (its cost is bounded by the file's size, but may still be seconds);
      // after a stream the classifier followed to the end, here: it visits the L1 entries and L2 tables the
      // classifier already read as they passed (milliseconds; a worker thread takes 100-250 ms to start).
      const plan = seen !== undefined ? planLayoutOf(image) : await plannerOf(store).plan(image);
      if (seen !== undefined && plan.fileSize === size && plan.streamSize === classifier.streamBytes && opsDigestOf(plan) === seen) {
        const residue = await chunkResidue(path, plan, writer, params);
        index = new Qcow2Index(digest, size, params, layoutOf(plan), got.data.buildList(), residue);
      } else {
        if (seen !== undefined) fallback = 'the layout plan differs from what the stream followed';
        index = await buildQcow2Index(image, writer, { blobDigest: digest, params, plan });
        if (member) index = await wrapMemberIndex(index, member, path, size, digest, writer);
      }
    } catch (e) {
      await writer.finish().catch(() => {});
      if (!isSnapyardError(e, 'QCOW2_INVALID')) throw e;
      // Not understood: the exact bytes, byte-chunked.
      const bytes = await ingestBytes(store, createReadStream(path, { highWaterMark: SPOOL_WRITE }), { ...opts, expectDigest: digest, expectSize: size });
      return { ...bytes, streamed: false, fallback: e.message };
    }
    let { newChunks, newStoredBytes } = await writer.finish();
    const stored = await store.add(index.encode());
    opts.lease?.pin(stored.digest);
    if (stored.written) {
      newChunks++;
      newStoredBytes += stored.storedSize;
    }
    await store.flush();
    const result: Qcow2IngestResult = { digest, size, index, indexDigest: stored.digest, chunks: index.count, newChunks, newStoredBytes, layout: 'qcow2', streamed: fallback === undefined };
    if (fallback !== undefined) result.fallback = fallback;
    return result;
  } finally {
    await Promise.all([rm(path, { force: true }), rm(`${path}.member`, { force: true })]);
  }
}

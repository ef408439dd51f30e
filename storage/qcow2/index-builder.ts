/**
 * Builds the qcow2 chunk index (storage/blobs/qcow2-index.ts) of an image file: the
 * guest view (FastCDC over the allocated guest data in guest order) plus the
 * host recipe (which host ranges are guest data, and the residue: every
 * other host byte, chunked too). Chunks go to a sink (the store on the
 * server; a hashing or caching sink on the client).
 *
 * The layout (layout-plan.ts) is walked before the first chunk is produced,
 * so an image the reader refuses (QCOW2_INVALID) costs nothing but the walk,
 * and the caller falls back to byte chunking. The walk's cost is bounded by
 * the file's size; the server runs it on a worker thread and passes the plan
 * in. Images whose data clusters share host bytes are refused there too: the
 * recipe needs each host byte to come from one place.
 *
 * Memory: the plan's typed arrays (at most MAX_EXTENTS extents and runs),
 * one 4 MiB read buffer and the chunker's window.
 */
import { open as openFile } from 'node:fs/promises';
import { ChunkIndexBuilder, type ChunkList } from '../blobs/chunk-index.js';
import type { Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';
import { chunkStream, DEFAULT_FASTCDC, type FastCDCParams } from '../blobs/fastcdc.js';
import { EXTENT_DATA, OP_RESIDUE, Qcow2Index, type Qcow2Layout } from '../blobs/qcow2-index.js';
import { planLayout, type Qcow2Plan } from './layout-plan.js';
import { Qcow2Image } from './reader.js';

/** Where chunks go while an index is built. */
export interface ChunkSink {
  /** `raw` is only valid during the call (the sink copies what it keeps). */
  add(raw: Uint8Array): Promise<{ digest: Digest }>;
}

export interface BuildOptions {
  params?: FastCDCParams;
  /** The file's sha256 (computed by the caller, e.g. while the upload was spooled). */
  blobDigest: Digest;
  /** The layout, when the caller walked it already (on a worker thread: layout-plan.ts planOffThread). */
  plan?: Qcow2Plan;
}

const PIECE = 4 * 1024 * 1024;

function refuse(why: string): SnapyardError {
  return new SnapyardError('QCOW2_INVALID', why);
}

/** Builds the index; throws QCOW2_INVALID (nothing stored yet) when the image is not understood. */
export async function buildQcow2Index(path: string, sink: ChunkSink, opts: BuildOptions): Promise<Qcow2Index> {
  const params = opts.params ?? DEFAULT_FASTCDC;
  const img = Qcow2Image.open(path);
  try {
    const plan = opts.plan ?? planLayout(img);
    const fileSize = img.fileSize;
    if (plan.fileSize !== fileSize) throw refuse(`image changed while it was read (${plan.fileSize} bytes when planned, ${fileSize} now)`);
    const { extentOffsets: gOff, extentLengths: gLen, extentKinds: gKind } = plan;
    // Guest data in guest order, then the residue in host order, through FastCDC into the sink.
    const buf = Buffer.allocUnsafe(PIECE);
    const data = new ChunkIndexBuilder(params);
    async function* guestData(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < gKind.length; i++) {
        if (gKind[i] !== EXTENT_DATA) continue;
        for (let at = gOff[i]!, end = gOff[i]! + gLen[i]!; at < end; ) {
          const n = Math.min(PIECE, end - at);
          img.readGuestInto(buf.subarray(0, n), at, undefined);
          yield buf.subarray(0, n);
          at += n;
        }
      }
    }
    for await (const c of chunkStream(guestData(), params, { copy: false })) data.push((await sink.add(c.data)).digest, c.length);
    const residue = await chunkResidue(path, plan, sink, params, buf);
    return new Qcow2Index(opts.blobDigest, fileSize, params, layoutOf(plan), data.buildList(), residue);
  } finally {
    img.close();
  }
}

/** The layout of a plan, as Qcow2Index takes it. */
export function layoutOf(plan: Qcow2Plan): Qcow2Layout {
  const { virtualSize, clusterSize, hasBacking, extentOffsets, extentLengths, extentKinds, opKinds, opLengths, opSources } = plan;
  return { virtualSize, clusterSize, hasBacking, extentOffsets, extentLengths, extentKinds, opKinds, opLengths, opSources };
}

/** FastCDC over the residue stream (the host bytes of the plan's residue ops, in host order) of the file at `path`, into the sink. */
export async function chunkResidue(path: string, plan: Pick<Qcow2Plan, 'opKinds' | 'opLengths'>, sink: ChunkSink, params: FastCDCParams, buf = Buffer.allocUnsafe(PIECE)): Promise<ChunkList> {
  const { opKinds, opLengths } = plan;
  const residue = new ChunkIndexBuilder(params);
  const fh = await openFile(path, 'r');
  try {
    async function* residueBytes(): AsyncGenerator<Uint8Array> {
      let host = 0;
      for (let k = 0; k < opKinds.length; k++) {
        if (opKinds[k] === OP_RESIDUE) {
          for (let at = host, end = host + opLengths[k]!; at < end; ) {
            const n = Math.min(buf.byteLength, end - at);
            const { bytesRead } = await fh.read(buf, 0, n, at);
            if (bytesRead !== n) throw refuse(`image changed while it was read (short read at ${at})`);
            yield buf.subarray(0, n);
            at += n;
          }
        }
        host += opLengths[k]!;
      }
    }
    for await (const c of chunkStream(residueBytes(), params, { copy: false })) residue.push((await sink.add(c.data)).digest, c.length);
  } finally {
    await fh.close();
  }
  return residue.buildList();
}

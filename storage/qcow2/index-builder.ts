/**
 * Builds the qcow2 chunk index (storage/qcow2-index.ts) of an image file: the
 * guest view (FastCDC over the allocated guest data in guest order) plus the
 * host recipe (which host ranges are guest data, and the residue: every
 * other host byte, chunked too). Chunks go to a sink (the store on the
 * server; a hashing or caching sink on the client).
 *
 * The whole layout is walked before the first chunk is produced, so an image
 * the reader refuses (QCOW2_INVALID) costs nothing but the walk, and the
 * caller falls back to byte chunking. Images whose data clusters share host
 * bytes (two guest clusters on one host cluster) are refused here too: the
 * recipe needs each host byte to come from one place.
 *
 * Memory: the extent lists (a few numbers per extent: runs of host-contiguous
 * data, at most one per cluster) plus one 4 MiB read buffer and the chunker's
 * window.
 */
import { open as openFile } from 'node:fs/promises';
import { ChunkIndexBuilder } from '../chunk-index.js';
import type { Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';
import { chunkStream, DEFAULT_FASTCDC, type FastCDCParams } from '../fastcdc.js';
import { EXTENT_DATA, EXTENT_ZERO, OP_DATA, OP_RESIDUE, Qcow2Index } from '../qcow2-index.js';
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
}

const PIECE = 4 * 1024 * 1024;
/** More extents than this and the image is treated as not understood (byte chunking). */
const MAX_EXTENTS = 1 << 24;

function refuse(why: string): SnapyardError {
  return new SnapyardError('QCOW2_INVALID', why);
}

/** Builds the index; throws QCOW2_INVALID (nothing stored yet) when the image is not understood. */
export async function buildQcow2Index(path: string, sink: ChunkSink, opts: BuildOptions): Promise<Qcow2Index> {
  const params = opts.params ?? DEFAULT_FASTCDC;
  const img = Qcow2Image.open(path);
  try {
    const fileSize = img.fileSize;
    // 1. The layout: guest extents (data + compressed = data, zero) and the data clusters' host ranges.
    const gOff: number[] = [];
    const gLen: number[] = [];
    const gKind: number[] = [];
    /** Host-mapped data runs: host offset, length, data-stream offset. */
    const hOff: number[] = [];
    const hLen: number[] = [];
    const hSrc: number[] = [];
    let stream = 0;
    for (const e of img.extents()) {
      if (e.kind === 'unallocated') continue;
      const kind = e.kind === 'zero' ? EXTENT_ZERO : EXTENT_DATA;
      const last = gKind.length - 1;
      if (last >= 0 && gKind[last] === kind && gOff[last]! + gLen[last]! === e.guestOffset) gLen[last]! += e.length;
      else {
        if (gKind.length >= MAX_EXTENTS) throw refuse('too many extents');
        gOff.push(e.guestOffset);
        gLen.push(e.length);
        gKind.push(kind);
      }
      if (e.kind === 'data') {
        const len = Math.min(e.length, fileSize - e.hostOffset!);
        const j = hOff.length - 1;
        if (j >= 0 && hOff[j]! + hLen[j]! === e.hostOffset && hSrc[j]! + hLen[j]! === stream) {
          hLen[j]! += len;
        } else {
          hOff.push(e.hostOffset!);
          hLen.push(len);
          hSrc.push(stream);
        }
      }
      if (kind === EXTENT_DATA) stream += e.length;
    }
    // 2. The recipe, in host order.
    const order = Array.from(hOff.keys()).sort((a, b) => hOff[a]! - hOff[b]!);
    const opKinds: number[] = [];
    const opLengths: number[] = [];
    const opSources: number[] = [];
    let pos = 0;
    for (const j of order) {
      const h = hOff[j]!;
      if (h < pos) throw refuse(`host bytes at 0x${h.toString(16)} are shared by two guest ranges`);
      if (h > pos) {
        opKinds.push(OP_RESIDUE);
        opLengths.push(h - pos);
        opSources.push(0);
      }
      const k = opKinds.length - 1;
      if (k >= 0 && opKinds[k] === OP_DATA && opSources[k]! + opLengths[k]! === hSrc[j] && h === pos) opLengths[k]! += hLen[j]!;
      else {
        opKinds.push(OP_DATA);
        opLengths.push(hLen[j]!);
        opSources.push(hSrc[j]!);
      }
      pos = h + hLen[j]!;
    }
    if (pos < fileSize) {
      opKinds.push(OP_RESIDUE);
      opLengths.push(fileSize - pos);
      opSources.push(0);
    }
    // 3. Guest data in guest order, then the residue in host order, through FastCDC into the sink.
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
    const residue = new ChunkIndexBuilder(params);
    const fh = await openFile(path, 'r');
    try {
      async function* residueBytes(): AsyncGenerator<Uint8Array> {
        let host = 0;
        for (let k = 0; k < opKinds.length; k++) {
          if (opKinds[k] === OP_RESIDUE) {
            for (let at = host, end = host + opLengths[k]!; at < end; ) {
              const n = Math.min(PIECE, end - at);
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
    const layout = {
      virtualSize: img.virtualSize,
      clusterSize: img.clusterSize,
      hasBacking: img.backingFile !== undefined,
      extentOffsets: Float64Array.from(gOff),
      extentLengths: Float64Array.from(gLen),
      extentKinds: Uint8Array.from(gKind),
      opKinds: Uint8Array.from(opKinds),
      opLengths: Float64Array.from(opLengths),
      opSources: Float64Array.from(opSources),
    };
    return new Qcow2Index(opts.blobDigest, fileSize, params, layout, data.buildList(), residue.buildList());
  } finally {
    img.close();
  }
}

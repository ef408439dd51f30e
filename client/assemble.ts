/**
 * Writing a pulled snapshot to disk from verified chunks.
 *
 * Full image: the blob's exact bytes in host order (the index's pieces),
 * written to a temporary file, hashed on the way and compared with the blob
 * digest, fsync'ed, renamed into place.
 *
 * Overlay: a qcow2 v3 image whose backing file is the local base and which
 * holds only the guest clusters where the target differs from the base. A
 * guest range is known to be the same when the target's chunk there is the
 * base's chunk at the same guest place (same digest, same guest ranges), or
 * when both read zeros there; every other cluster is built from the target's
 * chunks and compared with the base's bytes: equal clusters are skipped,
 * all-zero ones become zero clusters, the rest data clusters.
 */
import { createHash } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import type { BlobIndex } from '../storage/blobs/blob-index.js';
import { readBlob } from '../storage/blobs/blob-reader.js';
import type { ChunkStore } from '../storage/chunks/chunk-store.js';
import type { ChunkList, Piece } from '../storage/blobs/chunk-index.js';
import { SnapyardError } from '../storage/errors.js';
import { Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import { Qcow2Writer } from '../storage/qcow2/writer.js';

export type ChunkGetter = (hex: string) => Promise<Buffer>;

/**
 * A small LRU of chunk bytes (neighbouring pieces often cut the same chunk)
 * that can also start reads ahead of use (prefetch), so several chunks are
 * being read and decompressed while one is written.
 */
export class ChunkLru {
  private readonly m = new Map<string, Promise<Buffer>>();
  constructor(private readonly get: ChunkGetter, private readonly max = 64) {}

  chunk(list: ChunkList, i: number): Promise<Buffer> {
    const hex = list.rawDigestAt(i).toString('hex');
    const hit = this.m.get(hex);
    if (hit) {
      this.m.delete(hex);
      this.m.set(hex, hit);
      return hit;
    }
    const expected = list.lengths[i]!;
    const p = this.get(hex).then((b) => {
      if (b.byteLength !== expected) throw new SnapyardError('CHUNK_CORRUPT', `chunk sha256:${hex} has ${b.byteLength} bytes, the index says ${expected}`);
      return b;
    });
    p.catch(() => this.m.delete(hex));
    this.m.set(hex, p);
    if (this.m.size > this.max) this.m.delete(this.m.keys().next().value as string);
    return p;
  }
}

/** Pieces with the chunk reads of the next `ahead` pieces already started. */
async function* prefetched(pieces: Iterable<Piece>, lru: ChunkLru, ahead = 24): AsyncGenerator<{ piece: Piece; data: Buffer }> {
  const queue: Array<{ piece: Piece; data: Promise<Buffer> }> = [];
  const it = pieces[Symbol.iterator]();
  const fill = () => {
    while (queue.length < ahead) {
      const n = it.next();
      if (n.done) return;
      const data = lru.chunk(n.value.list, n.value.i);
      data.catch(() => {});
      queue.push({ piece: n.value, data });
    }
  };
  fill();
  while (queue.length > 0) {
    const q = queue.shift()!;
    const data = await q.data;
    fill();
    yield { piece: q.piece, data };
  }
}

const WRITE = 4 * 1024 * 1024;

/**
 * Writes the full image. With `store` (every chunk is in it), bytes come from
 * the store's batched read path (runs of chunks per call, reused buffers);
 * otherwise chunk by chunk from `get` (e.g. some from a local base file).
 */
/** Bytes [from, to) of the file the index stands for. */
export async function readFileRange(index: BlobIndex, from: number, to: number, get: ChunkGetter): Promise<Buffer> {
  const out = Buffer.alloc(Math.max(0, Math.min(to, index.size) - from));
  const lru = new ChunkLru(get);
  let at = 0;
  for (const p of index.blobPieces(from, from + out.length)) at += (await lru.chunk(p.list, p.i)).copy(out, at, p.from, p.to);
  return out;
}

export async function writeFull(out: string, index: BlobIndex, get: ChunkGetter, onBytes?: (n: number) => void, store?: ChunkStore): Promise<void> {
  const tmp = `${out}.snapyard-part`;
  const fh = await open(tmp, 'w');
  const lru = new ChunkLru(get);
  const hash = createHash('sha256');
  try {
    const buf = Buffer.allocUnsafe(WRITE);
    let fill = 0;
    let pos = 0;
    const flush = async () => {
      hash.update(buf.subarray(0, fill));
      await fh.write(buf, 0, fill, pos);
      pos += fill;
      onBytes?.(fill);
      fill = 0;
    };
    if (store) {
      for await (const piece of readBlob(store, index)) {
        hash.update(piece);
        await fh.write(piece, 0, piece.byteLength, pos);
        pos += piece.byteLength;
        store.release?.(piece);
        onBytes?.(piece.byteLength);
      }
    } else for await (const { piece: p, data: c } of prefetched(index.blobPieces(0, index.size), lru)) {
      for (let a = p.from; a < p.to; ) {
        const n = Math.min(p.to - a, WRITE - fill);
        c.copy(buf, fill, a, a + n);
        fill += n;
        a += n;
        if (fill === WRITE) await flush();
      }
    }
    if (fill > 0) await flush();
    const digest = `sha256:${hash.digest('hex')}`;
    if (digest !== index.blobDigest || pos !== index.size) throw new SnapyardError('DIGEST_MISMATCH', `rebuilt image hashes to ${digest}, not ${index.blobDigest}`);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, out);
}

export interface OverlayStats {
  dataClusters: number;
  zeroClusters: number;
  /** Clusters built and compared with the base (the rest were known to match). */
  comparedClusters: number;
}

/** Guest ranges where the target's data is known to equal the base's. */
export function sameAsBase(target: Qcow2Index, base: Qcow2Index): Array<[number, number]> {
  const at = new Map<string, number[]>();
  for (let i = 0; i < base.data.count; i++) {
    const k = base.data.rawDigestAt(i).toString('hex');
    const l = at.get(k);
    if (l) l.push(i);
    else at.set(k, [i]);
  }
  const out: Array<[number, number]> = [];
  for (let i = 0; i < target.data.count; i++) {
    const cands = at.get(target.data.rawDigestAt(i).toString('hex'));
    if (!cands) continue;
    const mine = [...target.guestRanges(target.data.starts[i]!, target.data.lengths[i]!)];
    for (const j of cands) {
      const theirs = [...base.guestRanges(base.data.starts[j]!, base.data.lengths[j]!)];
      if (theirs.length === mine.length && theirs.every((r, k) => r.guestOffset === mine[k]!.guestOffset && r.length === mine[k]!.length)) {
        for (const r of mine) out.push([r.guestOffset, r.guestOffset + r.length]);
        break;
      }
    }
  }
  return out;
}

/** Clusters that may differ from the base: target data not known equal, and target zeros over base data. */
export function dirtyClusters(target: Qcow2Index, base: Qcow2Index, cs: number): Uint32Array {
  const n = Math.ceil(target.layout.virtualSize / cs);
  const mark = new Uint8Array(n);
  const markRange = (a: number, b: number) => {
    for (let c = Math.floor(a / cs); c * cs < b && c < n; c++) mark[c] = 1;
  };
  const same = sameAsBase(target, base).sort((x, y) => x[0] - y[0]);
  let k = 0;
  for (const p of target.guestPieces(0, target.layout.virtualSize)) {
    if (p.stream < 0) {
      // Target reads zeros here: dirty wherever the base has data.
      for (const b of base.guestPieces(p.guestOffset, p.length)) if (b.stream >= 0) markRange(b.guestOffset, b.guestOffset + b.length);
      continue;
    }
    let a = p.guestOffset;
    const end = p.guestOffset + p.length;
    while (k < same.length && same[k]![1] <= a) k++;
    for (let j = k; j < same.length && a < end && same[j]![0] < end; j++) {
      if (same[j]![0] > a) markRange(a, same[j]![0]);
      a = Math.max(a, same[j]![1]);
    }
    if (a < end) markRange(a, end);
  }
  const out: number[] = [];
  for (let c = 0; c < n; c++) if (mark[c]) out.push(c);
  return Uint32Array.from(out);
}

/** Clusters whose chunk reads writeOverlay starts ahead (each cuts about 1-2 chunks: well within the LRU's 64). */
const OVERLAY_AHEAD = 16;

export async function writeOverlay(
  out: string,
  target: Qcow2Index,
  base: { path: string; index: Qcow2Index; backingName: string },
  get: ChunkGetter,
  onCluster?: () => void,
  dirty: Uint32Array = dirtyClusters(target, base.index, target.layout.clusterSize),
  /** Runs after the active data is written, before the image is finished (internal snapshots go here). */
  beforeFinish?: (writer: Qcow2Writer) => Promise<unknown>,
): Promise<OverlayStats> {
  if (target.layout.hasBacking) {
    throw new SnapyardError('INVALID_ARGUMENT', 'the target is itself an overlay (it names a backing file): pull it without --overlay');
  }
  const cs = target.layout.clusterSize;
  const vs = target.layout.virtualSize;
  const img = Qcow2Image.open(base.path);
  const writer = await Qcow2Writer.create(out, { virtualSize: vs, clusterBits: Math.log2(cs), backingFile: base.backingName, backingFormat: 'qcow2' });
  const lru = new ChunkLru(get);
  const stats: OverlayStats = { dataClusters: 0, zeroClusters: 0, comparedClusters: dirty.length };
  const mine = Buffer.alloc(cs);
  const theirs = Buffer.alloc(cs);
  // The chunk reads of the next OVERLAY_AHEAD clusters are started before this one is compared and
  // written, so the store's workers decode in parallel (one read at a time left them mostly idle).
  let started = 0;
  const startReads = (upTo: number) => {
    for (; started < Math.min(dirty.length, upTo); started++) {
      const g = dirty[started]! * cs;
      for (const p of target.guestPieces(g, Math.min(cs, vs - g))) {
        if (p.stream < 0) continue;
        for (const piece of target.data.pieces(p.stream, p.stream + p.length)) lru.chunk(piece.list, piece.i).catch(() => {});
      }
    }
  };
  try {
    for (let k = 0; k < dirty.length; k++) {
      startReads(k + 1 + OVERLAY_AHEAD);
      const c = dirty[k]!;
      const g = c * cs;
      const len = Math.min(cs, vs - g);
      const t = mine.subarray(0, len);
      for (const p of target.guestPieces(g, len)) {
        const dst = t.subarray(p.guestOffset - g, p.guestOffset - g + p.length);
        if (p.stream < 0) {
          dst.fill(0);
          continue;
        }
        let at = 0;
        for (const piece of target.data.pieces(p.stream, p.stream + p.length)) {
          const chunk = await lru.chunk(piece.list, piece.i);
          at += chunk.copy(dst, at, piece.from, piece.to);
        }
      }
      // The base's bytes here (zeros past its end: a smaller backing file reads as zeros beyond it).
      const b = theirs.subarray(0, len);
      const inBase = Math.max(0, Math.min(len, img.virtualSize - g));
      if (inBase > 0) img.readGuestInto(b.subarray(0, inBase), g, undefined);
      b.fill(0, inBase);
      onCluster?.();
      if (t.equals(b)) continue;
      if (isZero(t)) {
        await writer.writeZeros(g, len);
        stats.zeroClusters++;
      } else {
        await writer.writeData(g, t);
        stats.dataClusters++;
      }
    }
    await beforeFinish?.(writer);
    await writer.finish();
  } catch (e) {
    await writer.abort();
    throw e;
  } finally {
    img.close();
  }
  return stats;
}

const ZEROS = Buffer.alloc(64 * 1024);

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const n = Math.min(ZEROS.length, b.length - i);
    if (b[i] !== 0 || b.compare(ZEROS, 0, n, i, i + n) !== 0) return false;
  }
  return true;
}

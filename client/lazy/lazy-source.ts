/**
 * A block source (client/nbd/source.ts) over a snapshot's chunk index in the
 * registry: the guest view of a qcow2 snapshot (its data stream placed at
 * its extents, zeros elsewhere) or a raw blob's bytes, answered chunk by
 * chunk from a local file holding the chunk (the base, --base), the node
 * cache, or the network (client/lazy/chunk-fetcher.ts).
 *
 * - Every chunk is verified against its digest before a byte of it is
 *   returned (LocalSources hashes what it reads from files and the cache;
 *   the fetcher hashes what arrives before it goes into the cache).
 * - The chunks of a read are read from local places all at once; those it
 *   lacks are fetched together (one batch) before the read assembles its
 *   bytes; a chunk fetched for another read is awaited.
 * - A read not answered within `readTimeoutMs` fails (the NBD server says
 *   EIO): never zeros, never data that was not verified.
 * - Zero clusters and unallocated ranges are answered by blockStatus and
 *   read as zeros without touching any chunk.
 * - Chunks from the node cache are read in batches (cached-chunks.ts): a
 *   few worker round trips per read instead of one per chunk.
 * Memory: the bytes of one read (and its cache batches, in the store's
 * reused buffers) plus the recent chunks, within `recentBytes`.
 */
import type { BlobIndex } from '../../storage/blobs/blob-index.js';
import type { ChunkList, Piece } from '../../storage/blobs/chunk-index.js';
import { SnapyardError } from '../../storage/errors.js';
import { Qcow2Index } from '../../storage/blobs/qcow2-index.js';
import type { Want } from '../fetch.js';
import type { LocalSources } from '../sources.js';
import { MAX_STATUS_EXTENTS, type BlockSource, type StatusExtent } from '../nbd/source.js';
import type { ChunkFetcher } from './chunk-fetcher.js';
import { BufferPool } from './buffer-pool.js';
import type { LocalCopy } from './local-copy.js';
import { readCached, RecentChunks, type CachedBatch, type CachedStore } from './cached-chunks.js';

export interface LazySourceOptions {
  index: BlobIndex;
  sources: LocalSources;
  fetcher: ChunkFetcher;
  /** A read not answered by then fails (default 60 s). */
  readTimeoutMs?: number;
  /** The node cache's chunk store: the chunks of a read it holds are read in batches (cached-chunks.ts); without it, one by one through `sources`. */
  cache?: CachedStore | null;
  /** Memory for recent chunks' verified bytes (default 8 MiB). */
  recentBytes?: number;
  /** Memory for reply buffers the NBD server gave back, kept for reuse (default 16 MiB). */
  replyBufferBytes?: number;
  /** What was answered, kept as plain bytes (local-copy.ts): a range read again is read from there. */
  copy?: LocalCopy | null;
  /** Told of every read (offset, length) as it arrives: a trace of what the guest reads. */
  onRead?: (offset: number, length: number) => void;
}

/** Default memory for recent chunks (LazySourceOptions.recentBytes). */
export const RECENT_BYTES = 8 * 1024 * 1024;
/** Default memory for reply buffers waiting for reuse (LazySourceOptions.replyBufferBytes). */
export const REPLY_BUFFER_BYTES = 16 * 1024 * 1024;

/** Where the bytes [at, at + piece.to - piece.from) of a read come from. */
interface Placed {
  at: number;
  piece: Piece;
}

export class LazySource implements BlockSource {
  readonly size: number;
  /** Recent chunks' verified bytes (neighbouring reads often cut the same chunk). */
  private readonly recent: RecentChunks;
  /** Reply buffers waiting for reuse. */
  private readonly buffers: BufferPool;
  /** Chunks the node cache held corrupt (read again from elsewhere, never served). */
  corrupt = 0;
  private readonly timeoutMs: number;

  constructor(private readonly opts: LazySourceOptions) {
    const ix = opts.index;
    if (ix instanceof Qcow2Index && ix.layout.hasBacking) {
      throw new SnapyardError('INVALID_ARGUMENT', 'the snapshot is a qcow2 overlay (it names a backing file): its guest view needs that file; mount a standalone snapshot');
    }
    this.size = ix instanceof Qcow2Index ? ix.layout.virtualSize : ix.size;
    this.timeoutMs = opts.readTimeoutMs ?? 60_000;
    this.recent = new RecentChunks(opts.recentBytes ?? RECENT_BYTES);
    this.buffers = new BufferPool(opts.replyBufferBytes ?? REPLY_BUFFER_BYTES);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.opts.onRead?.(offset, length);
    // What was answered before is local: no deadline to watch.
    const copy = this.opts.copy;
    if (copy?.has(offset, offset + length)) {
      const out = this.buffers.take(length);
      if (await copy.read(offset, out)) return out;
      this.buffers.give(out);
    }
    const deadline = Date.now() + this.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new SnapyardError('CONNECTION_LOST', `read of ${length} bytes at ${offset} not answered within ${this.timeoutMs} ms`)), this.timeoutMs);
    });
    try {
      return await Promise.race([this.readRange(offset, length, deadline), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The NBD server wrote a buffer read() returned: its memory serves a later read. */
  release(buf: Buffer): void {
    this.buffers.give(buf);
  }

  async blockStatus(offset: number, length: number): Promise<StatusExtent[]> {
    const ix = this.opts.index;
    if (!(ix instanceof Qcow2Index)) return [{ length, zero: false }];
    const out: StatusExtent[] = [];
    for (const p of ix.guestPieces(offset, length)) {
      const zero = p.stream < 0;
      const last = out[out.length - 1];
      if (last && last.zero === zero) last.length += p.length;
      else if (out.length >= MAX_STATUS_EXTENTS) break;
      else out.push({ length: p.length, zero });
    }
    return out;
  }

  /** The distinct chunks guest ranges read, in the order of the ranges (a boot trace's fetch order). */
  wantsFor(ranges: Iterable<readonly [number, number]>): Want[] {
    const seen = new Set<string>();
    const out: Want[] = [];
    for (const [offset, length] of ranges) {
      const end = Math.min(offset + length, this.size);
      if (offset < 0 || end <= offset) continue;
      for (const { piece } of this.place(offset, end - offset)) {
        const hex = hexAt(piece.list, piece.i);
        if (seen.has(hex)) continue;
        seen.add(hex);
        out.push({ hex, length: piece.list.lengths[piece.i]! });
      }
    }
    return out;
  }

  /** The chunk pieces of guest range [offset, offset + length), placed in the read's buffer (zero ranges left out). */
  private place(offset: number, length: number): Placed[] {
    const ix = this.opts.index;
    const out: Placed[] = [];
    if (!(ix instanceof Qcow2Index)) {
      let at = 0;
      for (const piece of ix.pieces(offset, offset + length)) {
        out.push({ at, piece });
        at += piece.to - piece.from;
      }
      return out;
    }
    for (const g of ix.guestPieces(offset, length)) {
      if (g.stream < 0) continue;
      let at = g.guestOffset - offset;
      for (const piece of ix.data.pieces(g.stream, g.stream + g.length)) {
        out.push({ at, piece });
        at += piece.to - piece.from;
      }
    }
    return out;
  }

  private async readRange(offset: number, length: number, deadline: number): Promise<Buffer> {
    const out = this.buffers.take(length);
    const copy = this.opts.copy;
    const placed = this.place(offset, length);
    // What no piece covers reads as zeros (pieces come in ascending order).
    let filled = 0;
    for (const { at, piece } of placed) {
      if (at > filled) out.fill(0, filled, at);
      filled = Math.max(filled, at + piece.to - piece.from);
    }
    if (filled < length) out.fill(0, filled, length);
    // Pieces of recent chunks are copied at once (nothing awaited between the look and the copy);
    // the others' chunks are read from local places all at once (verified as read), those nowhere local in one batch.
    const rest: Placed[] = [];
    const have = new Map<string, Buffer>();
    const inFiles: Want[] = [];
    const others: Want[] = [];
    for (const p of placed) {
      const { piece } = p;
      const hex = hexAt(piece.list, piece.i);
      if (!have.has(hex) && this.recent.copyOut(hex, piece.from, piece.to, out, p.at)) continue;
      rest.push(p);
      if (have.has(hex)) continue;
      have.set(hex, EMPTY); // seen
      const want = { hex, length: piece.list.lengths[piece.i]! };
      (this.opts.sources.fileOf(hex) >= 0 || !this.opts.cache ? inFiles : others).push(want);
    }
    if (rest.length === 0) {
      if (placed.length > 0) copy?.keep(offset, out); // zeros alone are as cheap to answer again
      return out;
    }
    const batches: CachedBatch[] = [];
    try {
      const missing: Want[] = [];
      const fromCache = async (wants: Want[]) => {
        if (wants.length === 0 || !this.opts.cache) return wants;
        const batch = await readCached(this.opts.cache, wants);
        batches.push(batch);
        this.corrupt += batch.corrupt;
        for (const [hex, b] of batch.got) have.set(hex, b);
        return batch.missing;
      };
      await Promise.all([
        ...inFiles.map(async (w) => {
          const b = await this.opts.sources.get(w.hex);
          if (b && b.byteLength === w.length) have.set(w.hex, b);
          else missing.push(w);
        }),
        fromCache(others).then((m) => missing.push(...m)),
      ]);
      if (missing.length > 0) {
        await this.opts.fetcher.ensure(missing, deadline).catch(() => {}); // chunk() retries what is still missing
        for (const w of await fromCache(missing)) have.set(w.hex, await this.chunk(w.hex, w.length, deadline));
      }
      for (const { at, piece } of rest) {
        const hex = hexAt(piece.list, piece.i);
        const b = have.get(hex)!;
        b.copy(out, at, piece.from, piece.to);
        // A chunk this read cut is likely the neighbouring read's too.
        if (piece.from > 0 || piece.to < b.byteLength) this.recent.put(hex, b);
      }
      copy?.keep(offset, out);
      return out;
    } catch (e) {
      this.buffers.give(out);
      throw e;
    } finally {
      for (const b of batches) b.release();
    }
  }

  /** A chunk's verified bytes: local, else fetched (again) until the deadline. */
  private async chunk(hex: string, length: number, deadline: number): Promise<Buffer> {
    for (;;) {
      const b = await this.opts.sources.get(hex);
      if (b && b.byteLength !== length) throw new SnapyardError('CHUNK_CORRUPT', `chunk sha256:${hex} has ${b.byteLength} bytes, the index says ${length}`);
      if (b) return b;
      if (Date.now() >= deadline) throw new SnapyardError('CHUNK_MISSING', `chunk sha256:${hex} could not be fetched before the read deadline`);
      try {
        await this.opts.fetcher.ensure([{ hex, length }], deadline);
      } catch (e) {
        if (Date.now() >= deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

const EMPTY = Buffer.alloc(0);

function hexAt(list: ChunkList, i: number): string {
  return list.digests.toString('hex', i * 32, i * 32 + 32);
}

/**
 * The distinct chunks of the snapshot: those the guest view reads, in guest
 * order (what a prefetch fetches first), then the file's others (qcow2
 * metadata). One pass, before the export listens: kept cheap.
 */
export function snapshotChunks(index: BlobIndex): Want[] {
  const seen = new Set<string>();
  const out: Want[] = [];
  const lists = index instanceof Qcow2Index ? [index.data, ...index.lists().filter((l) => l !== index.data)] : index.lists();
  for (const list of lists) {
    for (let i = 0; i < list.count; i++) {
      const hex = hexAt(list, i);
      if (seen.has(hex)) continue;
      seen.add(hex);
      out.push({ hex, length: list.lengths[i]! });
    }
  }
  return out;
}

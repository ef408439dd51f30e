/**
 * A full pull's image, written while its chunks download (client/pull.ts).
 *
 * Each downloaded chunk is decoded and verified once, by the cache's worker
 * that stores it (ChunkWriter.addStored with a `place`), and that worker also
 * writes the verified bytes at every place the chunk has in the file; so the
 * event loop only moves compressed bytes, and nothing is read back out of the
 * cache or decoded twice. Chunks that do not come that way (a delta-encoded
 * frame, one the cache already had, a local file's, the cache's) are written
 * here. The file is a temporary name until it is complete: then hashed whole
 * (the blob digest), fsync'ed and renamed into place.
 *
 * run() walks the file in order behind the download: it waits until each
 * piece is written, and hashes the complete prefix as it grows (read back
 * from the page cache, hashed on a worker), so the whole-file check is done
 * moments after the last chunk lands. Memory does not grow with the image:
 * what waits here is a promise per chunk, no bytes.
 */
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import type { BlobIndex } from '../storage/blobs/blob-index.js';
import type { ChunkPlace } from '../storage/chunks/chunk-store.js';
import { localDigester, type StreamDigester } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { ChunkLru, type ChunkGetter } from './assemble.js';

/** Bytes read back and hashed at a time. */
const HASH_STEP = 4 * 1024 * 1024;
/** Pieces whose chunks (read here: a local file's, the cache's) are read ahead of the one written. */
const AHEAD = 24;

interface Waiter {
  promise: Promise<void>;
  resolve: () => void;
  reject: (e: unknown) => void;
  /** Someone writes it (placed() or write() was called). */
  coming: boolean;
}

function waiter(): Waiter {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // observed by run()
  return { promise, resolve, reject, coming: false };
}

/** What the download (client/fetch.ts) does with the chunks it receives. */
export interface ChunkPlacer {
  /** Where the chunk goes in the file (null: nowhere). */
  place(hex: string): ChunkPlace | null;
  /** The chunk is being written at its places by the cache's worker (`done` settles when it is). */
  placed(hex: string, done: Promise<void>): void;
  /** The chunk's verified bytes (or how to read them): written here at its places. */
  write(hex: string, bytes: Buffer | (() => Promise<Buffer>)): void;
  /** Throws once the pull failed (the download stops asking for more). */
  check(): void;
  /** The download failed. */
  fail(e: unknown): void;
  /** The download ended. */
  downloaded(): void;
}

export class StreamedImage implements ChunkPlacer {
  readonly tmp: string;
  /** Downloaded chunks: their [from, to, fileOffset] triples in the file. */
  private readonly spans = new Map<string, number[]>();
  /** Downloaded chunks the walk has not passed yet: settles once written. */
  private readonly written = new Map<string, Waiter>();
  private failure: unknown = null;

  private constructor(readonly out: string, readonly index: BlobIndex, private readonly fh: FileHandle) {
    this.tmp = `${out}.snapyard-part`;
  }

  /** Opens the temporary file; `download`: the chunks the network will bring (hex). */
  static async create(out: string, index: BlobIndex, download: Iterable<string>): Promise<StreamedImage> {
    const fh = await open(`${out}.snapyard-part`, 'w+');
    const img = new StreamedImage(out, index, fh);
    for (const hex of download) img.spans.set(hex, []);
    let pos = 0;
    for (const p of index.blobPieces(0, index.size)) {
      const s = img.spans.get(p.list.rawDigestAt(p.i).toString('hex'));
      if (s) s.push(p.from, p.to, pos);
      pos += p.to - p.from;
    }
    return img;
  }

  place(hex: string): ChunkPlace | null {
    const spans = this.spans.get(hex);
    return spans ? { path: this.tmp, spans } : null;
  }

  private waiterOf(hex: string): Waiter {
    let w = this.written.get(hex);
    if (!w) {
      w = waiter();
      this.written.set(hex, w);
    }
    return w;
  }

  placed(hex: string, done: Promise<void>): void {
    if (!this.spans.has(hex)) return;
    const w = this.waiterOf(hex);
    if (w.coming) return;
    w.coming = true;
    done.then(w.resolve, w.reject);
  }

  write(hex: string, bytes: Buffer | (() => Promise<Buffer>)): void {
    const spans = this.spans.get(hex);
    if (!spans) return;
    this.placed(hex, (async () => {
      const b = typeof bytes === 'function' ? await bytes() : bytes;
      for (let k = 0; k + 2 < spans.length; k += 3) await writeFully(this.fh, b.subarray(spans[k]!, spans[k + 1]!), spans[k + 2]!);
    })());
  }

  check(): void {
    if (this.failure) throw this.failure;
  }

  /** The pull failed: the walk stops (with this error) and the download stops asking for more. */
  fail(e: unknown): void {
    this.failure ??= e;
    for (const w of this.written.values()) w.reject(e);
  }

  /** The download ended: a chunk it did not write never will be. */
  downloaded(): void {
    for (const hex of this.spans.keys()) {
      const w = this.waiterOf(hex);
      if (!w.coming) w.reject(new SnapyardError('CHUNK_MISSING', `chunk sha256:${hex} was not downloaded`));
    }
  }

  /**
   * Walks the file: waits for downloaded pieces, writes the others (`get`:
   * verified bytes of a local or cached chunk), hashes the complete prefix
   * with `digester`; then checks the digest, fsyncs and renames. On failure
   * the temporary file is removed.
   */
  async run(get: ChunkGetter, digester: StreamDigester = localDigester(), onBytes?: (n: number) => void): Promise<void> {
    const fh = this.fh;
    try {
      const lru = new ChunkLru(get);
      const readBuf = Buffer.allocUnsafe(HASH_STEP);
      let hashed = 0;
      const hashTo = async (end: number) => {
        while (hashed < end) {
          const n = Math.min(HASH_STEP, end - hashed);
          const { bytesRead } = await fh.read(readBuf, 0, n, hashed);
          if (bytesRead !== n) throw new SnapyardError('INTERNAL', `${this.tmp}: short read at ${hashed}`);
          const wait = digester.update(readBuf.subarray(0, n));
          if (wait) await wait;
          hashed += n;
          onBytes?.(n);
        }
      };
      // Pieces in order, with the reads of the next AHEAD local ones started.
      const queue: Array<{ at: number; len: number; wait: Promise<void> | null; data: Promise<Buffer> | null; from: number }> = [];
      const it = this.index.blobPieces(0, this.index.size)[Symbol.iterator]();
      let pos = 0;
      let local = 0;
      const fill = () => {
        while (local < AHEAD) {
          const n = it.next();
          if (n.done) return;
          const p = n.value;
          const hex = p.list.rawDigestAt(p.i).toString('hex');
          const len = p.to - p.from;
          if (this.spans.has(hex)) queue.push({ at: pos, len, wait: this.waiterOf(hex).promise, data: null, from: p.from });
          else {
            const data = lru.chunk(p.list, p.i);
            data.catch(() => {});
            queue.push({ at: pos, len, wait: null, data, from: p.from });
            local++;
          }
          pos += len;
        }
      };
      fill();
      let done = 0;
      while (queue.length > 0) {
        const q = queue.shift()!;
        if (q.wait) await q.wait;
        else {
          local--;
          const data = await q.data!;
          await writeFully(fh, data.subarray(q.from, q.from + q.len), q.at);
        }
        if (this.failure) throw this.failure;
        fill();
        done = q.at + q.len;
        if (done - hashed >= HASH_STEP) await hashTo(done - (done % HASH_STEP));
      }
      await hashTo(done);
      this.written.clear();
      const digest = await digester.digest();
      if (digest !== this.index.blobDigest || hashed !== this.index.size) throw new SnapyardError('DIGEST_MISMATCH', `rebuilt image hashes to ${digest}, not ${this.index.blobDigest}`);
      await fh.sync();
    } catch (e) {
      this.fail(e);
      await fh.close();
      await rm(this.tmp, { force: true });
      throw e;
    }
    await fh.close();
    await rename(this.tmp, this.out);
  }
}

async function writeFully(fh: FileHandle, b: Buffer, position: number): Promise<void> {
  for (let at = 0; at < b.byteLength; ) {
    const { bytesWritten } = await fh.write(b, at, b.byteLength - at, position + at);
    if (bytesWritten === 0) throw new SnapyardError('INTERNAL', `writing at ${position + at}: no progress`);
    at += bytesWritten;
  }
}

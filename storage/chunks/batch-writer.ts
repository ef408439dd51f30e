/**
 * The batched chunk writer of a LocalChunkStore with worker threads: new
 * chunks are copied into ~1 MiB batches, each compressed and appended to a
 * pack by a worker in one message (chunks given in their stored form, as a
 * registry sends them, go in batches of their own: the worker decodes and
 * hashes each, and appends them as they are); at most BATCH_IN_FLIGHT batches per writer
 * are in flight (memory: that x (BATCH_BYTES + a chunk)). A chunk is findable
 * (deduped) from the moment it is added, through the store's `pending` map,
 * and its index row waits in `added` until the store's next flush commits it.
 * A stored form may also be written into a file by its worker once verified
 * (`place`: a pull's image).
 */
import type { ChunkPlace, ChunkWriter } from './chunk-store.js';
import type { ChunkTask, ChunkTaskResult } from './chunk-worker.js';
import { digestFromRaw, rawOf, sha256Raw, type Digest } from '../digest.js';
import { RECORD_HEADER_SIZE, type RecordLocation } from './pack-files.js';
import type { WorkerPool } from '../worker-pool.js';

/** Bytes of new chunks sent to a worker in one message. */
export const BATCH_BYTES = 1024 * 1024;
/** Batches in flight per writer. */
const BATCH_IN_FLIGHT = 4;

export interface Pending {
  done: Promise<RecordLocation>;
  /** Sends the batch holding the chunk now, if it is still waiting to fill (so nobody waits on a stalled writer). */
  kick?: () => void;
}

export interface AddedRow {
  digest: Digest;
  loc: RecordLocation;
  rawLength: number;
}

/** What the writer needs of its store. */
export interface BatchWriterHost {
  pool: WorkerPool<ChunkTask, ChunkTaskResult>;
  /** Chunks handed to a writer whose index row is not committed yet. */
  pending: Map<Digest, Pending>;
  /** The chunk is held (its stored length), on its way (`Pending`), or unknown (null). */
  known(digest: Digest, raw32: Uint8Array): number | Pending | null;
  /** Records a written chunk's row for the next flush. */
  added(row: AddedRow): void;
  /** Spare batch buffers (BATCH_BYTES + maxChunk each), reused across writers. */
  freeBuffers: Buffer[];
  maxChunk: number;
}

/** One kind of batch being filled: raw chunks (compressed by the worker) or stored forms (verified by it, kept as they are). */
interface Filling {
  buf: Buffer | null;
  used: number;
  lengths: number[];
  rawLengths: number[];
  digests: Digest[];
  waiters: Array<{ resolve: (l: RecordLocation) => void; reject: (e: unknown) => void }>;
  /** Stored forms: the file their worker also writes them into, and each chunk's spans there (ChunkWriter.addStored). */
  placePath: string | null;
  spans: number[][];
}

const empty = (): Filling => ({ buf: null, used: 0, lengths: [], rawLengths: [], digests: [], waiters: [], placePath: null, spans: [] });

export function batchWriter(host: BatchWriterHost): ChunkWriter {
  const { pool } = host;
  const bufSize = BATCH_BYTES + host.maxChunk;
  const fills = { raw: empty(), stored: empty() };
  const inFlight: Array<Promise<void>> = [];
  let newChunks = 0;
  let newStoredBytes = 0;
  let failure: unknown = null;
  const borrowed: Array<Promise<RecordLocation>> = [];
  const send = (kind: 'raw' | 'stored') => {
    const batch = fills[kind];
    if (!batch.buf || batch.digests.length === 0) return;
    fills[kind] = empty();
    const own = new Uint8Array(batch.buf.buffer, batch.buf.byteOffset, batch.buf.byteLength);
    const task: ChunkTask = kind === 'raw'
      ? { op: 'appendBatch', buf: own, lengths: batch.lengths, digests: batch.digests }
      : { op: 'appendStoredBatch', buf: own, lengths: batch.lengths, rawLengths: batch.rawLengths, digests: batch.digests, ...(batch.placePath !== null ? { place: { path: batch.placePath, spans: batch.spans } } : {}) };
    const done = pool.run(task, [own.buffer as ArrayBuffer]).then((r) => {
      const { locs, buf: back } = r as { locs: RecordLocation[]; buf: Uint8Array };
      if (back.byteLength === bufSize) host.freeBuffers.push(Buffer.from(back.buffer, back.byteOffset, back.byteLength));
      for (let i = 0; i < locs.length; i++) {
        host.added({ digest: batch.digests[i]!, loc: locs[i]!, rawLength: batch.rawLengths[i]! });
        newStoredBytes += locs[i]!.length + RECORD_HEADER_SIZE;
      }
      newChunks += locs.length;
      locs.forEach((l, i) => batch.waiters[i]!.resolve(l));
    });
    const settled = done.then(
      () => {},
      (e) => {
        failure ??= e;
        for (const d of batch.digests) host.pending.delete(d);
        for (const w of batch.waiters) w.reject(e);
      },
    );
    inFlight.push(settled);
  };
  /** Dedups `digest`; else copies `bytes` into the batch of `kind`. */
  const put = async (kind: 'raw' | 'stored', digest: Digest, raw32: Uint8Array, bytes: Uint8Array, rawLength: number, place?: ChunkPlace): Promise<{ digest: Digest; written: boolean; placed?: Promise<void> }> => {
    const known = host.known(digest, raw32);
    if (known !== null) {
      // A chunk another writer is still storing: this blob needs it stored before it commits.
      if (typeof known !== 'number') {
        known.kick?.();
        borrowed.push(known.done);
      }
      return { digest, written: false };
    }
    let f = fills[kind];
    // One file per batch.
    if (f.buf && (f.used + bytes.byteLength > f.buf.byteLength || (place && f.placePath !== null && f.placePath !== place.path))) {
      send(kind);
      f = fills[kind];
    }
    if (!f.buf) f.buf = host.freeBuffers.pop() ?? Buffer.allocUnsafeSlow(Math.max(bufSize, bytes.byteLength));
    f.buf.set(bytes, f.used);
    f.used += bytes.byteLength;
    f.lengths.push(bytes.byteLength);
    f.rawLengths.push(rawLength);
    f.digests.push(digest);
    f.spans.push(place?.spans ?? []);
    if (place) f.placePath = place.path;
    // Findable (and deduped) from now on, before its batch is even sent.
    const done = new Promise<RecordLocation>((resolve, reject) => f.waiters.push({ resolve, reject }));
    done.catch(() => {});
    host.pending.set(digest, { done, kick: () => { if (fills[kind].digests.includes(digest)) send(kind); } });
    if (f.used >= BATCH_BYTES) send(kind);
    while (inFlight.length >= BATCH_IN_FLIGHT) await inFlight.shift();
    if (!place) return { digest, written: true };
    const placed = done.then(() => {});
    placed.catch(() => {}); // the caller's to observe
    return { digest, written: true, placed };
  };
  return {
    add: async (raw) => {
      if (failure) throw failure;
      const raw32 = sha256Raw(raw);
      return put('raw', digestFromRaw(raw32), raw32, raw, raw.byteLength);
    },
    addStored: async (digest, stored, rawLength, place) => {
      if (failure) throw failure;
      return put('stored', digest, rawOf(digest), stored, rawLength, place);
    },
    finish: async () => {
      send('raw');
      send('stored');
      await Promise.all(inFlight.splice(0));
      if (failure) throw failure;
      await Promise.all(borrowed.splice(0)); // rejects if another writer failed to store one of ours
      return { newChunks, newStoredBytes };
    },
  };
}

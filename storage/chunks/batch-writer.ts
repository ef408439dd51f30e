/**
 * The batched chunk writer of a LocalChunkStore with worker threads: new
 * chunks are copied into ~1 MiB batches, each compressed and appended to a
 * pack by a worker in one message; at most BATCH_IN_FLIGHT batches per writer
 * are in flight (memory: that x (BATCH_BYTES + a chunk)). A chunk is findable
 * (deduped) from the moment it is added, through the store's `pending` map,
 * and its index row waits in `added` until the store's next flush commits it.
 */
import type { ChunkWriter } from './chunk-store.js';
import type { ChunkTask, ChunkTaskResult } from './chunk-worker.js';
import { digestFromRaw, sha256Raw, type Digest } from '../digest.js';
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

export function batchWriter(host: BatchWriterHost): ChunkWriter {
  const { pool } = host;
  const bufSize = BATCH_BYTES + host.maxChunk;
  let buf: Buffer | null = null;
  let used = 0;
  let lengths: number[] = [];
  let digests: Digest[] = [];
  let waiters: Array<{ resolve: (l: RecordLocation) => void; reject: (e: unknown) => void }> = [];
  const inFlight: Array<Promise<void>> = [];
  let newChunks = 0;
  let newStoredBytes = 0;
  let failure: unknown = null;
  const borrowed: Array<Promise<RecordLocation>> = [];
  const send = () => {
    if (!buf || digests.length === 0) return;
    const batch = { buf, lengths, digests, waiters };
    buf = null;
    used = 0;
    lengths = [];
    digests = [];
    waiters = [];
    const own = new Uint8Array(batch.buf.buffer, batch.buf.byteOffset, batch.buf.byteLength);
    const done = pool.run({ op: 'appendBatch', buf: own, lengths: batch.lengths, digests: batch.digests }, [own.buffer as ArrayBuffer]).then((r) => {
      const { locs, buf: back } = r as { locs: RecordLocation[]; buf: Uint8Array };
      if (back.byteLength === bufSize) host.freeBuffers.push(Buffer.from(back.buffer, back.byteOffset, back.byteLength));
      for (let i = 0; i < locs.length; i++) {
        host.added({ digest: batch.digests[i]!, loc: locs[i]!, rawLength: batch.lengths[i]! });
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
  return {
    add: async (raw) => {
      if (failure) throw failure;
      const raw32 = sha256Raw(raw);
      const digest = digestFromRaw(raw32);
      const known = host.known(digest, raw32);
      if (known !== null) {
        // A chunk another writer is still storing: this blob needs it stored before it commits.
        if (typeof known !== 'number') {
          known.kick?.();
          borrowed.push(known.done);
        }
        return { digest, written: false };
      }
      if (buf && used + raw.byteLength > buf.byteLength) send();
      if (!buf) buf = host.freeBuffers.pop() ?? Buffer.allocUnsafeSlow(Math.max(bufSize, raw.byteLength));
      buf.set(raw, used);
      used += raw.byteLength;
      lengths.push(raw.byteLength);
      digests.push(digest);
      // Findable (and deduped) from now on, before its batch is even sent.
      const done = new Promise<RecordLocation>((resolve, reject) => waiters.push({ resolve, reject }));
      done.catch(() => {});
      host.pending.set(digest, { done, kick: () => { if (digests.includes(digest)) send(); } });
      if (used >= BATCH_BYTES) send();
      while (inFlight.length >= BATCH_IN_FLIGHT) await inFlight.shift();
      return { digest, written: true };
    },
    finish: async () => {
      send();
      await Promise.all(inFlight.splice(0));
      if (failure) throw failure;
      await Promise.all(borrowed.splice(0)); // rejects if another writer failed to store one of ours
      return { newChunks, newStoredBytes };
    },
  };
}

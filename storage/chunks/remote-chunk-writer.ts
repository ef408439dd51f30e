/**
 * The batched ChunkWriter of a RemoteChunkStore: chunks are hashed and copied
 * as they come, and looked up in the catalog a batch at a time (up to
 * WRITER_BATCH_CHUNKS chunks or WRITER_BATCH_BYTES bytes: one round trip per
 * batch, never one per chunk); the store then touches the ones held and
 * spools the others. At most WRITER_IN_FLIGHT batches per writer are being
 * looked up, so memory is bounded by (in flight + 1) x a batch.
 *
 * A chunk is findable (deduped, readable from its copy) from the moment it is
 * added, through the store's `pending` map. add() answers before its batch is
 * looked up, so its `written` is provisional: true unless the chunk was
 * already pending here; finish() counts what the lookups decided.
 *
 * Stored forms (addStored: a push's records) are gathered in batches of
 * STORED_BATCH_BYTES, decoded and hashed on the store's codec workers
 * (host.verify), then queued like added chunks with their stored form kept:
 * the store spools that form as it came, nothing is compressed again.
 */
import type { CatalogEntry } from './chunk-catalog.js';
import type { ChunkWriter } from './chunk-store.js';
import { digestFromRaw, rawOf, sha256Raw, type Digest } from '../digest.js';

export const WRITER_BATCH_CHUNKS = 1024;
export const WRITER_BATCH_BYTES = 8 * 1024 * 1024;
const WRITER_IN_FLIGHT = 2;
/** Stored forms checked per call of host.verify (one worker message). */
const STORED_BATCH_BYTES = 1024 * 1024;

/** A chunk waiting for its batch's lookup (its bytes in memory). */
export interface QueuedChunk {
  state: 'queued';
  digest: Digest;
  raw32: Buffer;
  raw: Buffer;
  /** The stored form it came in (addStored), spooled as it is; absent: the store encodes `raw`. */
  stored?: Buffer;
  /** Settles once the lookup decided (held, or spooled); rejects if storing failed. */
  done: Promise<void>;
  /** Sends the batch holding the chunk now, so nobody waits on a stalled writer. */
  kick: () => void;
}

/** What the writer needs of its store. */
export interface RemoteWriterHost {
  /** Chunks this store holds but has not recorded in the catalog. */
  pending: Map<Digest, { state: string }>;
  /** Registers a queued chunk in `pending` (its copy of the bytes is `raw`). */
  queue(digest: Digest, raw32: Buffer, raw: Buffer, kick: () => void): QueuedChunk;
  /** Looks the batch up in the catalog (one call). */
  lookup(batch: QueuedChunk[]): Promise<Array<CatalogEntry | null>>;
  /** Touches the held ones, spools the others; answers each one's stored bytes when written, null when held. */
  place(batch: QueuedChunk[], entries: Array<CatalogEntry | null>): Promise<Array<number | null>>;
  /** Settles a batch's chunks (`error`: storing failed; they are dropped from `pending`). */
  settle(batch: QueuedChunk[], error?: unknown): void;
  /** Decodes stored forms and checks each against its name and length (CHUNK_CORRUPT); their raw bytes end to end. */
  verify(items: StoredItem[]): Promise<Buffer>;
}

interface StoredItem {
  digest: Digest;
  stored: Buffer;
  rawLength: number;
}

export function remoteWriter(host: RemoteWriterHost): ChunkWriter {
  let batch: QueuedChunk[] = [];
  let bytes = 0;
  const inFlight: Array<Promise<void>> = [];
  /** Chunks this blob needs that another batch (maybe another writer's) is storing. */
  const borrowed: QueuedChunk[] = [];
  let newChunks = 0;
  let newStoredBytes = 0;
  let failure: unknown = null;
  /** The last batch placed: batches are looked up at once but spooled in order, so a blob's records lie in its order. */
  let placed: Promise<unknown> = Promise.resolve();
  const send = () => {
    if (batch.length === 0) return;
    const b = batch;
    batch = [];
    bytes = 0;
    const entries = host.lookup(b);
    const after = placed;
    const sizes = entries.then(async (e) => {
      await after;
      return host.place(b, e);
    });
    placed = sizes.catch(() => {});
    const run = sizes.then(
      (sizes) => {
        for (const s of sizes) {
          if (s === null) continue;
          newChunks++;
          newStoredBytes += s;
        }
        host.settle(b);
      },
      (e) => {
        failure ??= e;
        host.settle(b, e);
      },
    );
    inFlight.push(run);
  };
  /** Whether the chunk is pending already (then borrowed when another batch is storing it). */
  const held = (digest: Digest): boolean => {
    const known = host.pending.get(digest);
    if (!known) return false;
    // Another batch (maybe another writer's) is storing it: this blob needs it stored before it commits.
    if (known.state === 'queued') {
      const q = known as QueuedChunk;
      if (!batch.includes(q)) borrowed.push(q);
    }
    return true;
  };
  const enqueue = (digest: Digest, raw32: Buffer, own: Buffer, stored?: Buffer) => {
    const q = host.queue(digest, raw32, own, () => {
      if (batch.includes(q)) send();
    });
    if (stored) q.stored = stored;
    batch.push(q);
    bytes += own.byteLength;
    if (batch.length >= WRITER_BATCH_CHUNKS || bytes >= WRITER_BATCH_BYTES) send();
  };
  let stored: StoredItem[] = [];
  let storedBytes = 0;
  /** Verifications of stored batches, queued in order as each completes. */
  let verified: Promise<void> = Promise.resolve();
  const verifying: Array<Promise<void>> = [];
  const sendStored = () => {
    if (stored.length === 0) return;
    const items = stored;
    stored = [];
    storedBytes = 0;
    const check = host.verify(items);
    const after = verified;
    const run = check.then(
      async (raw) => {
        await after;
        let at = 0;
        for (const it of items) {
          const own = raw.subarray(at, (at += it.rawLength));
          // Found pending meanwhile (another writer's, or twice in this upload): not queued again.
          if (!held(it.digest)) enqueue(it.digest, rawOf(it.digest), own, it.stored);
        }
      },
      (e) => {
        failure ??= e;
      },
    );
    verified = run;
    verifying.push(run);
  };
  return {
    add: async (raw) => {
      if (failure) throw failure;
      const raw32 = sha256Raw(raw);
      const digest = digestFromRaw(raw32);
      if (held(digest)) return { digest, written: false };
      const own = Buffer.allocUnsafe(raw.byteLength);
      own.set(raw);
      enqueue(digest, raw32, own);
      while (inFlight.length >= WRITER_IN_FLIGHT) await inFlight.shift();
      return { digest, written: true };
    },
    addStored: async (digest, form, rawLength) => {
      if (failure) throw failure;
      if (held(digest)) return { digest, written: false };
      const own = Buffer.allocUnsafe(form.byteLength);
      own.set(form);
      stored.push({ digest, stored: own, rawLength });
      storedBytes += own.byteLength;
      if (storedBytes >= STORED_BATCH_BYTES) sendStored();
      while (verifying.length > WRITER_IN_FLIGHT) await verifying.shift();
      while (inFlight.length >= WRITER_IN_FLIGHT) await inFlight.shift();
      if (failure) throw failure;
      return { digest, written: true };
    },
    finish: async () => {
      sendStored();
      await Promise.all(verifying.splice(0));
      send();
      await Promise.all(inFlight.splice(0));
      if (failure) throw failure;
      // Their batches are sent now (a stalled writer's would wait for its next chunk); rejects if one failed to store one of ours.
      const others = borrowed.splice(0);
      for (const q of others) q.kick();
      await Promise.all(others.map((q) => q.done));
      return { newChunks, newStoredBytes };
    },
  };
}

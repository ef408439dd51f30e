import { decodeBlobIndex, indexMemoryBytes, type BlobIndex } from './blob-index.js';
import { DEFAULT_READ_BYTES, MemoryBudget, ReadBudget, type BudgetCache } from '../memory-budget.js';
import type { ChunkStore } from '../chunks/chunk-store.js';
import type { Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';
import { ingestBlob, type IngestOptions, type IngestResult } from './blob-ingest.js';
import { readBlob } from './blob-reader.js';
import type { BlobRecord, MetadataStore } from '../meta/metadata-store.js';
import type { FastCDCParams } from './fastcdc.js';
import { ChunkPins } from '../coord/chunk-pins.js';
import { AsyncLock } from '../coord/commit-lock.js';
import { digestFromRaw, rawOf } from '../digest.js';
import { ChunkMissingError } from '../errors.js';

/** Chunks a blob commit checks per call of the chunk store. */
const COMMIT_CHECK_BATCH = 4096;

/**
 * Blobs as the registry sees them: ingest into chunks + index + metadata, look
 * up per repository, read back byte-exact.
 */
export class BlobStore {
  private readonly committedHooks: Array<(digest: Digest) => void> = [];

  constructor(
    readonly meta: MetadataStore,
    readonly chunks: ChunkStore,
    private readonly params?: FastCDCParams,
    /** Where qcow2 uploads are spooled for guest-view chunking (without it they are byte-chunked). */
    private readonly spoolDir?: string,
    /** Decoded indexes of recently used blobs (a cache in the store's memory budget). */
    private readonly indexCache: BudgetCache<Digest, BlobIndex> = new MemoryBudget(32 * 1024 * 1024).cache('blob-indexes', indexMemoryBytes),
    /** Chunks GC must keep (owned by the Store: open-store.ts). */
    readonly pins: ChunkPins = new ChunkPins(),
    /** The commit lock (commit-lock.ts), shared with manifest commits and GC's delete step. */
    readonly lock: AsyncLock = new AsyncLock(),
    /** Bytes in flight shared by every blob read (memory-budget.ts): memory stays bounded however many clients download. */
    readonly readBudget: ReadBudget = new ReadBudget(DEFAULT_READ_BYTES),
  ) {}

  /** Ingests a blob and links it into `repo`; the metadata commit is the last step. */
  async ingest(repo: string, source: AsyncIterable<Uint8Array>, opts: Omit<IngestOptions, 'params'> = {}): Promise<IngestResult> {
    const lease = opts.lease ?? this.pins.lease();
    try {
      const r = await this.ingestUncommitted(source, { ...opts, lease });
      await this.commit(repo, r);
      return r;
    } finally {
      if (!opts.lease) lease.release();
    }
  }

  /** Stores a blob's chunks and index without making it visible anywhere (see commit). */
  ingestUncommitted(source: AsyncIterable<Uint8Array>, opts: Omit<IngestOptions, 'params'> = {}): Promise<IngestResult> {
    return ingestBlob(this.chunks, source, {
      ...opts,
      ...(this.params ? { params: this.params } : {}),
      ...(this.spoolDir !== undefined ? { spoolDir: this.spoolDir } : {}),
    });
  }

  /**
   * Makes an ingested blob visible in `repo`: under the commit lock, checks
   * that its index and every chunk it lists are in the chunk store, then
   * commits (GC's delete step cannot run in between). CHUNK_MISSING otherwise.
   */
  async commit(repo: string, r: IngestResult): Promise<void> {
    // Durably held, not merely on its way: a chunk whose index row a failed flush never committed does not count.
    await this.lock.run(async () => {
      // In batches: one call (one query on a remote catalog) per COMMIT_CHECK_BATCH chunks, never one per chunk.
      let batch: Uint8Array[] = [rawOf(r.indexDigest)];
      const check = async () => {
        const missing = await this.missingDurable(batch);
        if (missing.length > 0) throw new ChunkMissingError(digestFromRaw(batch[missing[0]!]!));
        batch = [];
      };
      for (const list of r.index.lists()) {
        for (let i = 0; i < list.count; i++) {
          batch.push(list.rawDigestAt(i));
          if (batch.length === COMMIT_CHECK_BATCH) await check();
        }
      }
      await check();
      await this.meta.commitBlob(repo, { digest: r.digest, size: r.size, indexDigest: r.indexDigest });
    });
    this.indexCache.set(r.digest, r.index);
    for (const h of this.committedHooks) h(r.digest);
  }

  /** Positions in `raws` of chunks not durably held (batched when the store can, else one by one). */
  private async missingDurable(raws: Uint8Array[]): Promise<number[]> {
    if (this.chunks.missingDurable) return this.chunks.missingDurable(raws);
    const out: number[] = [];
    for (let i = 0; i < raws.length; i++) {
      const d = digestFromRaw(raws[i]!);
      if (!(await (this.chunks.durable ? this.chunks.durable(d) : this.chunks.has(d)))) out.push(i);
    }
    return out;
  }

  /** Forgets a cached index (GC deleted the blob, repair found it broken). */
  forget(digest: Digest): void {
    this.indexCache.delete(digest);
  }

  /** Calls `fn` after every blob commit (e.g. to prepare delta data in the background). */
  onCommit(fn: (digest: Digest) => void): void {
    this.committedHooks.push(fn);
  }

  /** The blob if it is linked into `repo`. */
  async stat(repo: string, digest: Digest): Promise<BlobRecord | null> {
    if (!(await this.meta.isLinked(repo, digest))) return null;
    return this.meta.getBlob(digest);
  }

  async index(blob: BlobRecord): Promise<BlobIndex> {
    const hit = this.indexCache.get(blob.digest);
    if (hit) return hit;
    const idx = decodeBlobIndex(await this.chunks.get(blob.indexDigest));
    if (idx.blobDigest !== blob.digest || idx.size !== blob.size) {
      throw new SnapyardError('INDEX_INVALID', `index ${blob.indexDigest} does not describe blob ${blob.digest}`);
    }
    this.indexCache.set(blob.digest, idx);
    return idx;
  }

  read(index: BlobIndex, start?: number, end?: number): AsyncGenerator<Buffer> {
    return readBlob(this.chunks, index, start, end, { budget: this.readBudget });
  }
}

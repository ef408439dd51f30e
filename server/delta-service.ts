import { RECORDS_UPLOAD_FORM } from '../storage/protocol/record-upload.js';
import { randomUUID } from 'node:crypto';
import { chunkSet, chunkSetMemoryBytes, type BlobIndex } from '../storage/blobs/blob-index.js';
import type { BudgetCache } from '../storage/memory-budget.js';
import type { Digest } from '../storage/digest.js';
import type { BlobRecord } from '../storage/meta/metadata.js';
import type { Store } from '../storage/open-store.js';
import { compressWithPrefix, FRAMES_UPLOAD_FORM } from '../storage/protocol/wire.js';
import { ChunkEncoder } from './chunk-encoder.js';
import type { PinLease } from '../storage/coord/chunk-pins.js';
import type { QuotaTicket } from '../storage/coord/session-quota.js';


export interface PushSession {
  id: string;
  repo: string;
  width: number;
  createdMs: number;
  /** The compact index as the client sent it (decompressed); only when asked for. */
  compact: Buffer | null;
  /** Chunks this replica resolved or was sent for the session: its gc keeps them until commit or expiry. */
  lease: PinLease;
}

/** What this replica holds for a session: its pins, and its place in the open-session caps if it opened it. */
interface Held {
  lease: PinLease;
  ticket: QuotaTicket | null;
}

/**
 * State the delta endpoints keep between requests, per server: chunk sets of
 * recently used blobs, compressed index differences, and push sessions.
 * Everything here is a cache or short-lived; the store stays the truth.
 * Push sessions are the coordinator's (storage/coord/coordinator.ts: in
 * memory, or rows every replica reads): any replica continues one.
 */
export class DeltaService {
  private readonly sets: BudgetCache<Digest, Map<string, number>>;
  private readonly indexBytes: BudgetCache<Digest, Buffer>;
  private readonly diffs: BudgetCache<string, Buffer>;
  /** Answers of `_delta` (JSON), by target manifest, blob and held blobs. */
  readonly plans: BudgetCache<string, Buffer>;
  private readonly held = new Map<string, Held>();
  readonly encoder: ChunkEncoder;
  private forms: string[] | null = null;

  /** The `_upload` bodies this store takes (its _missing answer's uploadForms): records where its writers keep stored forms as they are. */
  async uploadForms(): Promise<string[]> {
    if (!this.forms) {
      const probe = this.store.chunks.writer();
      this.forms = probe.addStored ? ['zstd-stream', RECORDS_UPLOAD_FORM, FRAMES_UPLOAD_FORM] : ['zstd-stream', FRAMES_UPLOAD_FORM];
      await probe.finish();
    }
    return this.forms;
  }

  constructor(readonly store: Store) {
    this.sets = store.memory.cache('chunk-sets', chunkSetMemoryBytes);
    this.indexBytes = store.memory.cache('index-bytes', (b: Buffer) => b.byteLength + 64);
    this.diffs = store.memory.cache('index-diffs', (b: Buffer, k: string) => b.byteLength + k.length * 2 + 64);
    this.plans = store.memory.cache('delta-plans', (b: Buffer, k: string) => b.byteLength + k.length * 2 + 64);
    this.encoder = new ChunkEncoder(store, (b) => this.indexOfDigest(b));
    store.blobs.onCommit((d) => this.encoder.warm(d));
    const timer = setInterval(() => void this.expire().catch(() => {}), Math.max(50, Math.min(60_000, store.uploadTtlMs / 4)));
    timer.unref();
    // The encoder's sketch cache is a database in the store: closed with it.
    store.onClose(() => {
      clearInterval(timer);
      this.encoder.close();
    });
  }

  async indexOfDigest(digest: Digest): Promise<BlobIndex | null> {
    const rec = await this.store.meta.getBlob(digest);
    return rec ? this.store.blobs.index(rec) : null;
  }

  /** The stored bytes of a blob's index (what a client compares against). */
  async encodedIndex(blob: BlobRecord): Promise<Buffer> {
    const hit = this.indexBytes.get(blob.digest);
    if (hit) return hit;
    const b = await this.store.chunks.get(blob.indexDigest);
    this.indexBytes.set(blob.digest, b);
    return b;
  }

  /** Distinct chunks (hex digest -> length) of a blob. */
  async chunksOf(blob: BlobRecord): Promise<Map<string, number>> {
    const hit = this.sets.get(blob.digest);
    if (hit) return hit;
    const set = chunkSet(await this.store.blobs.index(blob));
    this.sets.set(blob.digest, set);
    return set;
  }

  /** The target's index compressed against a held blob's index (cached). */
  async indexDiff(target: BlobRecord, base: BlobRecord | null): Promise<Buffer> {
    const key = `${target.digest}/${base?.digest ?? '-'}`;
    const hit = this.diffs.get(key);
    if (hit) return hit;
    const data = await this.encodedIndex(target);
    const prefix = base ? await this.encodedIndex(base) : null;
    const out = compressWithPrefix(data, prefix, 12);
    this.diffs.set(key, out);
    return out;
  }

  /**
   * Opens a push session. The open-session caps are the caller's ticket; the
   * compact indexes all sessions hold are capped too (maxSessionIndexBytes):
   * past it LIMIT_EXCEEDED (429), never another caller's session closed.
   */
  async openSession(repo: string, compact: Buffer, width: number, lease: PinLease, ticket: QuotaTicket): Promise<string> {
    const id = randomUUID();
    await this.store.coord.createPushSession({ id, repo, compact, width }, this.store.limits.maxSessionIndexBytes);
    this.held.set(id, { lease, ticket });
    return id;
  }

  /** An open session of `repo` (opened here or on another replica), its idle time reset; null when unknown or expired. */
  async session(id: string, repo: string, withIndex = false): Promise<PushSession | null> {
    const s = await this.store.coord.getPushSession(id, withIndex);
    if (!s || s.repo !== repo) return null;
    let h = this.held.get(id);
    if (!h) this.held.set(id, (h = { lease: this.store.pins.lease(), ticket: null }));
    return { id, repo, width: s.width, createdMs: s.createdMs, compact: s.compact, lease: h.lease };
  }

  /** Ends a session (committed, failed or expired) and releases what this replica held for it. */
  async closeSession(id: string): Promise<void> {
    this.release(id);
    await this.store.coord.deletePushSession(id);
  }

  private release(id: string): void {
    const h = this.held.get(id);
    h?.lease.release();
    h?.ticket?.release();
    this.held.delete(id);
  }

  /**
   * Push sessions idle longer than the store's upload TTL are closed, and
   * what this replica held for sessions closed elsewhere is released; returns
   * how many sessions expired.
   */
  async expire(): Promise<number> {
    const gone = await this.store.coord.expirePushSessions(Date.now() - this.store.uploadTtlMs);
    for (const id of gone) this.release(id);
    const open = await this.store.coord.openPushSessions([...this.held.keys()]);
    for (const id of [...this.held.keys()]) if (!open.has(id)) this.release(id);
    return gone.length;
  }
}

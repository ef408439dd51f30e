import { randomUUID } from 'node:crypto';
import { chunkSet, type BlobIndex } from '../storage/blobs/blob-index.js';
import type { Digest } from '../storage/digest.js';
import type { BlobRecord } from '../storage/meta/metadata.js';
import type { Store } from '../storage/open-store.js';
import { compressWithPrefix } from '../storage/protocol/wire.js';
import { ChunkEncoder } from './chunk-encoder.js';
import type { PinLease } from '../storage/coord/chunk-pins.js';
import { SnapyardError } from '../storage/errors.js';
import { RETRY_AFTER_SECONDS, type QuotaTicket } from '../storage/coord/session-quota.js';


export interface PushSession {
  id: string;
  repo: string;
  /** The compact index as the client sent it (decompressed). */
  compact: Buffer;
  width: number;
  createdMs: number;
  /** Last request of the session: idle longer than the store's upload TTL, it expires. */
  activeMs: number;
  /** Chunks resolved by `_missing` and written by `_upload`: GC keeps them until commit or expiry. */
  lease: PinLease;
  /** Its place in the open-session caps (storage/coord/session-quota.ts). */
  ticket: QuotaTicket;
}

/**
 * State the delta endpoints keep between requests, per server: chunk sets of
 * recently used blobs, compressed index differences, and push sessions.
 * Everything here is a cache or short-lived; the store stays the truth.
 */
export class DeltaService {
  private readonly sets = new Map<Digest, Map<string, number>>();
  private readonly indexBytes = new Map<Digest, Buffer>();
  private readonly diffs = new Map<string, Buffer>();
  private readonly sessions = new Map<string, PushSession>();
  readonly encoder: ChunkEncoder;

  constructor(readonly store: Store) {
    this.encoder = new ChunkEncoder(store, (b) => this.indexOfDigest(b));
    store.blobs.onCommit((d) => this.encoder.warm(d));
    const timer = setInterval(() => this.expire(), Math.max(50, Math.min(60_000, store.uploadTtlMs / 4)));
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
    remember(this.indexBytes, blob.digest, b, 8);
    return b;
  }

  /** Distinct chunks (hex digest -> length) of a blob. */
  async chunksOf(blob: BlobRecord): Promise<Map<string, number>> {
    const hit = this.sets.get(blob.digest);
    if (hit) return hit;
    const set = chunkSet(await this.store.blobs.index(blob));
    remember(this.sets, blob.digest, set, 8);
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
    remember(this.diffs, key, out, 32);
    return out;
  }

  /**
   * Opens a push session. The open-session caps are the caller's ticket; the
   * compact indexes all sessions hold are capped too (maxSessionIndexBytes):
   * past it LIMIT_EXCEEDED (429), never another caller's session closed.
   */
  openSession(repo: string, compact: Buffer, width: number, lease: PinLease, ticket: QuotaTicket): PushSession {
    this.expire();
    let held = compact.byteLength;
    for (const x of this.sessions.values()) held += x.compact.byteLength;
    const limit = this.store.limits.maxSessionIndexBytes;
    if (held > limit) {
      throw new SnapyardError('LIMIT_EXCEEDED', `open push sessions hold ${held - compact.byteLength} bytes of indexes (the limit is ${limit}): retry later`, {
        detail: { limit, retryAfter: RETRY_AFTER_SECONDS },
      });
    }
    const now = Date.now();
    const s = { id: randomUUID(), repo, compact, width, createdMs: now, activeMs: now, lease, ticket };
    this.sessions.set(s.id, s);
    return s;
  }

  session(id: string, repo: string): PushSession | null {
    this.expire();
    const s = this.sessions.get(id);
    if (!s || s.repo !== repo) return null;
    s.activeMs = Date.now();
    return s;
  }

  /** Ends a session (committed, failed or expired) and releases its pins. */
  closeSession(id: string): void {
    const s = this.sessions.get(id);
    s?.lease.release();
    s?.ticket.release();
    this.sessions.delete(id);
  }

  /** Push sessions idle longer than the store's upload TTL are closed; returns how many. */
  expire(): number {
    const limit = Date.now() - this.store.uploadTtlMs;
    let n = 0;
    for (const [id, s] of this.sessions) {
      if (s.activeMs < limit) {
        this.closeSession(id);
        n++;
      }
    }
    return n;
  }
}

function remember<K, V>(m: Map<K, V>, k: K, v: V, max: number): void {
  m.delete(k);
  m.set(k, v);
  while (m.size > max) m.delete(m.keys().next().value as K);
}

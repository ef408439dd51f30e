/**
 * What replicas of one registry must agree on, behind one interface:
 *   - delta push sessions (the compact index a `_missing` opened), so that
 *     `_upload` and `_commit` work on whichever replica they reach;
 *   - where an OCI upload session is held (its bytes are chunked as they
 *     arrive, in the memory of the replica that opened it): another replica
 *     forwards the session's requests there;
 *   - the start of the oldest open session, so gc keeps every chunk a
 *     session may rely on whichever replica runs it;
 *   - the maintenance lease: one gc or verify at a time, with a fence
 *     checked before each destructive step.
 * Implementations: LocalCoordinator (one process; the embedded default) and
 * PostgresCoordinator (postgres-coordinator.ts, several replicas).
 */
import { SnapyardError } from '../errors.js';
import { AsyncLock } from './commit-lock.js';
import { RETRY_AFTER_SECONDS } from './session-quota.js';

export interface PushSessionRecord {
  id: string;
  repo: string;
  /** Digest prefix width of the compact index. */
  width: number;
  /** The compact index (decompressed), when asked for. */
  compact: Buffer | null;
  createdMs: number;
  activeMs: number;
}

export interface MaintenanceLease {
  /** The fence: throws CONFLICT when this holder no longer holds the lease (it expired and another took it). */
  check(): Promise<void>;
}

export interface Coordinator {
  /** How other replicas reach this one (`serve --advertise-url`), or null. */
  readonly selfUrl: string | null;

  /**
   * Records a push session; LIMIT_EXCEEDED when the open sessions' indexes
   * would pass `maxIndexBytes` (nothing recorded).
   */
  createPushSession(s: { id: string; repo: string; width: number; compact: Buffer }, maxIndexBytes: number): Promise<void>;
  /** The session, its last-active time refreshed; null when unknown or expired. */
  getPushSession(id: string, withIndex: boolean): Promise<PushSessionRecord | null>;
  deletePushSession(id: string): Promise<boolean>;
  /** Removes the push sessions idle since before `idleBeforeMs`; returns their ids. */
  expirePushSessions(idleBeforeMs: number): Promise<string[]>;
  /** Of `ids`, those still open (on any replica). */
  openPushSessions(ids: string[]): Promise<Set<string>>;

  /** The URL of the replica holding OCI upload session `id` when it is another one; null otherwise. */
  uploadHolder(id: string): Promise<string | null>;

  /**
   * The start of the oldest session (upload or push) still open on another
   * replica, or null: gc keeps every chunk touched since (a session touches
   * what it relies on). A single process returns null: its pins (chunk-pins.ts)
   * do that job.
   */
  oldestSessionMs(idleBeforeMs: number): Promise<number | null>;

  /** Runs fn holding the maintenance lease: one gc or verify at a time, on any replica. */
  withMaintenance<T>(fn: (lease: MaintenanceLease) => Promise<T>): Promise<T>;

  close(): Promise<void>;
}

const HELD: MaintenanceLease = { check: async () => {} };

/** One process: sessions in memory, the lease an in-process lock. */
export class LocalCoordinator implements Coordinator {
  readonly selfUrl = null;
  private readonly push = new Map<string, PushSessionRecord & { compact: Buffer }>();
  private readonly lock = new AsyncLock();

  constructor(
    private readonly now: () => number = Date.now,
    /** Sessions idle longer than this are not answered (the store's upload TTL). */
    private readonly sessionTtlMs = Infinity,
  ) {}

  async createPushSession(s: { id: string; repo: string; width: number; compact: Buffer }, maxIndexBytes: number): Promise<void> {
    let held = 0;
    for (const x of this.push.values()) held += x.compact.byteLength;
    if (held + s.compact.byteLength > maxIndexBytes) throw indexesFull(held, maxIndexBytes);
    const t = this.now();
    this.push.set(s.id, { ...s, createdMs: t, activeMs: t });
  }

  async getPushSession(id: string, withIndex: boolean): Promise<PushSessionRecord | null> {
    const s = this.push.get(id);
    if (!s || s.activeMs < this.now() - this.sessionTtlMs) return null;
    s.activeMs = this.now();
    return { ...s, compact: withIndex ? s.compact : null };
  }

  async deletePushSession(id: string): Promise<boolean> {
    return this.push.delete(id);
  }

  async expirePushSessions(idleBeforeMs: number): Promise<string[]> {
    const out: string[] = [];
    for (const [id, s] of this.push) {
      if (s.activeMs >= idleBeforeMs) continue;
      this.push.delete(id);
      out.push(id);
    }
    return out;
  }

  async openPushSessions(ids: string[]): Promise<Set<string>> {
    return new Set(ids.filter((id) => this.push.has(id)));
  }

  async uploadHolder(): Promise<string | null> {
    return null;
  }

  async oldestSessionMs(): Promise<number | null> {
    return null;
  }

  withMaintenance<T>(fn: (lease: MaintenanceLease) => Promise<T>): Promise<T> {
    return this.lock.run(() => fn(HELD));
  }

  async close(): Promise<void> {
    this.push.clear();
  }
}

/** The refusal when open push sessions hold too many index bytes (HTTP 429, retry later). */
export function indexesFull(held: number, limit: number): SnapyardError {
  return new SnapyardError('LIMIT_EXCEEDED', `open push sessions hold ${held} bytes of indexes (the limit is ${limit}): retry later`, {
    detail: { limit, retryAfter: RETRY_AFTER_SECONDS },
  });
}

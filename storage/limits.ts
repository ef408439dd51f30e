/**
 * Resource limits of a store and the server in front of it: every request's
 * cost is bounded by these, never by what the request claims. Defaults are
 * meant for a registry of VM disk images; `snapyard serve` may expose them
 * as flags (StoreConfig.limits).
 */
export interface Limits {
  /** Largest blob a push commit or an upload may claim or make (default 64 GiB). */
  maxBlobBytes: number;
  /**
   * A push commit rebuilds and hashes the whole claimed blob: above
   * `commitFreeBytes`, the blob may be at most this many times the bytes of
   * the distinct chunks it is made of (repeated chunks are cheap to claim,
   * not to hash). Default 1024 with 4 GiB free: a 64 GiB raw disk needs 64 MiB
   * of distinct data; a sparse raw disk above 4 GiB with less data than that is
   * refused (push it as qcow2, whose zero clusters cost nothing).
   */
  maxCommitRepeat: number;
  commitFreeBytes: number;
  /** Open upload and push sessions per user (anonymous callers count as one user "anonymous"; default 64). */
  maxSessionsPerUser: number;
  /** Open upload and push sessions in all (default 256). */
  maxSessionsTotal: number;
  /** A compact index sent to `_missing`, decompressed (default 64 MiB: a 64 GiB disk at 64 KiB chunks is ~13 MB). */
  maxCompactIndexBytes: number;
  /** Compact indexes held by open push sessions, in all (default 512 MiB; past it new sessions get 429). */
  maxSessionIndexBytes: number;
  /** Bytes kept in DIR/reserve so deletions, tag moves and gc can run on a full disk (default 8 MiB; 0 = none). */
  reserveBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxBlobBytes: 64 * 1024 ** 3,
  maxCommitRepeat: 1024,
  commitFreeBytes: 4 * 1024 ** 3,
  maxSessionsPerUser: 64,
  maxSessionsTotal: 256,
  maxCompactIndexBytes: 64 * 1024 * 1024,
  maxSessionIndexBytes: 512 * 1024 * 1024,
  reserveBytes: 8 * 1024 * 1024,
};

export function resolveLimits(partial: Partial<Limits> = {}): Limits {
  const out = { ...DEFAULT_LIMITS };
  for (const [k, v] of Object.entries(partial) as Array<[keyof Limits, number | undefined]>) {
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`limit ${k} must be a whole number >= 0, not ${v}`);
    out[k] = v;
  }
  return out;
}

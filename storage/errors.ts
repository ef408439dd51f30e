/**
 * Typed errors with stable codes. Every error snapyard raises on purpose is a
 * SnapyardError; `code` is part of the contract (scripts and the HTTP layer
 * switch on it), `message` is for humans.
 */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'DIGEST_INVALID'
  | 'DIGEST_MISMATCH'
  | 'CHUNK_MISSING'
  | 'CHUNK_CORRUPT'
  | 'BLOB_UNKNOWN'
  | 'INDEX_INVALID'
  | 'SIZE_INVALID'
  | 'RANGE_INVALID'
  | 'QCOW2_INVALID'
  | 'NOT_FOUND'
  | 'CONFLICT'
  /** A manifest or tag named by a lifecycle operation (tag, rollback, rm, prune) does not exist: HTTP 404 MANIFEST_UNKNOWN. */
  | 'MANIFEST_UNKNOWN'
  /** A lifecycle rule refuses the operation (a base others depend on, a rollback past the first version): HTTP 409 DENIED. */
  | 'DENIED'
  | 'REGISTRY_ERROR'
  | 'REGISTRY_UNREACHABLE'
  | 'BUSY'
  | 'UNAUTHORIZED'
  | 'CONNECTION_LOST'
  | 'TLS_FAILED'
  /** The disk (or filesystem quota) is full: nothing was committed; free space or run gc (HTTP 507). */
  | 'STORAGE_FULL'
  /** A configured limit was reached (open sessions, sizes): retry later or ask less (HTTP 429 / 413). */
  | 'LIMIT_EXCEEDED'
  /** Still used by something else (a blob a manifest references): HTTP 405. */
  | 'IN_USE'
  /** A backing service (S3, PostgreSQL) did not answer or kept failing after bounded retries: retry later (HTTP 503). */
  | 'STORE_UNAVAILABLE'
  | 'INTERNAL';

export class SnapyardError extends Error {
  readonly code: ErrorCode;
  readonly detail?: unknown;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; detail?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'SnapyardError';
    this.code = code;
    if (options?.detail !== undefined) this.detail = options.detail;
  }
}

/** A chunk is not in the store (callers may fall back to another store). */
export class ChunkMissingError extends SnapyardError {
  constructor(readonly digest: string) {
    super('CHUNK_MISSING', `chunk ${digest} is missing`);
    this.name = 'ChunkMissingError';
  }
}

/** A chunk is in the store but its bytes do not hash to its name (never fall back silently). */
export class ChunkCorruptError extends SnapyardError {
  constructor(readonly digest: string, reason: string) {
    super('CHUNK_CORRUPT', `chunk ${digest} is corrupt: ${reason}`);
    this.name = 'ChunkCorruptError';
  }
}

export function isSnapyardError(e: unknown, code?: ErrorCode): e is SnapyardError {
  return e instanceof SnapyardError && (code === undefined || e.code === code);
}

/** True for the errors a full disk raises: ENOSPC / EDQUOT from the OS, SQLITE_FULL from SQLite. */
export function isDiskFull(e: unknown): boolean {
  if (e instanceof SnapyardError) return e.code === 'STORAGE_FULL';
  const x = e as { code?: unknown; message?: unknown } | null;
  const code = typeof x?.code === 'string' ? x.code : '';
  const msg = typeof x?.message === 'string' ? x.message : '';
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL' || /\bENOSPC\b|database or disk is full|no space left on device/i.test(msg);
}

/** A full disk as the typed error STORAGE_FULL (null for any other error). */
export function storageFailure(e: unknown): SnapyardError | null {
  if (e instanceof SnapyardError) return e.code === 'STORAGE_FULL' ? e : null;
  if (!isDiskFull(e)) return null;
  return new SnapyardError('STORAGE_FULL', `storage is full: ${(e as Error).message ?? String(e)}`, { cause: e });
}

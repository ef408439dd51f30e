import { isSnapyardError, storageFailure } from '../storage/errors.js';

/** Error codes of the OCI distribution-spec. */
export type OciCode =
  | 'BLOB_UNKNOWN'
  | 'BLOB_UPLOAD_INVALID'
  | 'BLOB_UPLOAD_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'RANGE_INVALID'
  | 'INTERNAL_ERROR'
  // snapyard's own stable codes, where the spec has none (the status says what class of error it is)
  | 'NOT_FOUND'
  | 'CONFLICT'
  | 'INDEX_INVALID'
  | 'QCOW2_INVALID'
  | 'CHUNK_MISSING'
  | 'CHUNK_CORRUPT'
  | 'STORAGE_FULL'
  | 'UNAVAILABLE';

/** An error answered as `{"errors":[{code,message,detail}]}` with an HTTP status. */
export class OciError extends Error {
  constructor(
    readonly status: number,
    readonly code: OciCode,
    message: string,
    readonly detail?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'OciError';
  }

  body(): string {
    return JSON.stringify({ errors: [{ code: this.code, message: this.message, ...(this.detail !== undefined ? { detail: this.detail } : {}) }] });
  }
}

interface Mapping {
  status: number;
  code: OciCode;
  /** Added to the message (what the operator or client should do). */
  hint?: string;
}

/**
 * Every stable code of storage/errors.ts, as the HTTP status and error code
 * it means on the wire. The distribution-spec's codes where one fits; where
 * none does, snapyard's own stable code (clients act on the status):
 *   input errors               400 (416 for ranges), their OCI code
 *   NOT_FOUND / BLOB_UNKNOWN   404
 *   CONFLICT                   409 (e.g. an upload that was closed meanwhile)
 *   MANIFEST_UNKNOWN / DENIED  404 / 409 from the lifecycle rules (storage/meta/lifecycle.ts)
 *   STORE_UNAVAILABLE          503 with Retry-After: S3 or PostgreSQL kept failing
 *   IN_USE                     405 (distribution answers a refused delete so)
 *   LIMIT_EXCEEDED             429 with Retry-After (413 for a size limit)
 *   BUSY                       503 with Retry-After
 *   STORAGE_FULL               507 (also any ENOSPC / SQLITE_FULL error)
 *   CHUNK_MISSING / _CORRUPT   500: the store lacks or holds bad bytes it committed (verify)
 *   REGISTRY_*                 502: an upstream registry failed
 *   anything else              500 INTERNAL_ERROR
 */
const MAPPING: Record<string, Mapping> = {
  INVALID_ARGUMENT: { status: 400, code: 'UNSUPPORTED' },
  DIGEST_INVALID: { status: 400, code: 'DIGEST_INVALID' },
  DIGEST_MISMATCH: { status: 400, code: 'DIGEST_INVALID' },
  SIZE_INVALID: { status: 400, code: 'SIZE_INVALID' },
  RANGE_INVALID: { status: 416, code: 'RANGE_INVALID' },
  INDEX_INVALID: { status: 400, code: 'INDEX_INVALID' },
  QCOW2_INVALID: { status: 400, code: 'QCOW2_INVALID' },
  BLOB_UNKNOWN: { status: 404, code: 'BLOB_UNKNOWN' },
  NOT_FOUND: { status: 404, code: 'NOT_FOUND' },
  CONFLICT: { status: 409, code: 'CONFLICT' },
  MANIFEST_UNKNOWN: { status: 404, code: 'MANIFEST_UNKNOWN' },
  DENIED: { status: 409, code: 'DENIED' },
  STORE_UNAVAILABLE: { status: 503, code: 'UNAVAILABLE' },
  IN_USE: { status: 405, code: 'UNSUPPORTED' },
  UNAUTHORIZED: { status: 401, code: 'UNAUTHORIZED' },
  LIMIT_EXCEEDED: { status: 429, code: 'TOOMANYREQUESTS' },
  BUSY: { status: 503, code: 'UNAVAILABLE' },
  STORAGE_FULL: { status: 507, code: 'STORAGE_FULL', hint: 'nothing was committed; retry once space is freed' },
  CHUNK_MISSING: { status: 500, code: 'CHUNK_MISSING', hint: 'the registry lost data it stored: run snapyard verify' },
  CHUNK_CORRUPT: { status: 500, code: 'CHUNK_CORRUPT', hint: 'the registry holds damaged data: run snapyard verify' },
  REGISTRY_ERROR: { status: 502, code: 'INTERNAL_ERROR' },
  REGISTRY_UNREACHABLE: { status: 502, code: 'INTERNAL_ERROR' },
  CONNECTION_LOST: { status: 502, code: 'INTERNAL_ERROR' },
  TLS_FAILED: { status: 502, code: 'INTERNAL_ERROR' },
  INTERNAL: { status: 500, code: 'INTERNAL_ERROR' },
};

/** Seconds a client is asked to wait (Retry-After) when a limit or a busy server refuses it without saying. */
const DEFAULT_RETRY_AFTER = 5;

/** The status and code a stable error code maps to (exported for tests and docs). */
export function mappingOf(code: string): Mapping {
  return MAPPING[code] ?? { status: 500, code: 'INTERNAL_ERROR' };
}

/** Maps storage errors to the OCI error they mean on the wire. */
export function toOciError(e: unknown): OciError {
  if (e instanceof OciError) return e;
  const full = storageFailure(e);
  const s = full ?? (isSnapyardError(e) ? e : null);
  if (!s) return new OciError(500, 'INTERNAL_ERROR', e instanceof Error ? e.message : String(e));
  const m = mappingOf(s.code);
  const detail = s.detail as { retryAfter?: number; status?: number } | undefined;
  const message = m.hint ? `${s.message} (${m.hint})` : s.message;
  if (s.code === 'LIMIT_EXCEEDED' && detail?.status === 413) return new OciError(413, 'SIZE_INVALID', message, s.detail);
  const headers: Record<string, string> = {};
  if (m.status === 429 || m.status === 503) headers['Retry-After'] = String(detail?.retryAfter ?? DEFAULT_RETRY_AFTER);
  if (m.code === 'INTERNAL_ERROR') return new OciError(m.status, m.code, `${s.code}: ${message}`, undefined, headers);
  return new OciError(m.status, m.code, message, s.detail, headers);
}

import { isSnapyardError, type SnapyardError } from '../storage/errors.js';

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
  | 'INTERNAL_ERROR';

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

/** Maps storage errors to the OCI error they mean on the wire. */
export function toOciError(e: unknown): OciError {
  if (e instanceof OciError) return e;
  if (isSnapyardError(e)) {
    const s = e as SnapyardError;
    switch (s.code) {
      case 'DIGEST_INVALID':
      case 'DIGEST_MISMATCH':
        return new OciError(400, 'DIGEST_INVALID', s.message, s.detail);
      case 'SIZE_INVALID':
        return new OciError(400, 'SIZE_INVALID', s.message);
      case 'RANGE_INVALID':
        return new OciError(416, 'RANGE_INVALID', s.message);
      case 'INVALID_ARGUMENT':
        return new OciError(400, 'UNSUPPORTED', s.message);
      default:
        return new OciError(500, 'INTERNAL_ERROR', `${s.code}: ${s.message}`);
    }
  }
  return new OciError(500, 'INTERNAL_ERROR', e instanceof Error ? e.message : String(e));
}

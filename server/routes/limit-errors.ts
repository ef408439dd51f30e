/**
 * How the storage layer's limit errors look on the wire (the routes of issue
 * 8's limits call these; toOciError may map the same codes globally):
 *   STORAGE_FULL    507 Insufficient Storage: nothing was committed; free space (rm + gc work on a full disk)
 *   LIMIT_EXCEEDED  429 TOOMANYREQUESTS with Retry-After (session caps), or 413 SIZE_INVALID (size caps)
 *   IN_USE          405 UNSUPPORTED, naming what uses it
 * The 507's body code is the stable code STORAGE_FULL (the distribution-spec
 * has none for it; clients act on the status).
 */
import { OciError, type OciCode } from '../oci-error.js';
import { isSnapyardError, storageFailure } from '../../storage/errors.js';
import { RETRY_AFTER_SECONDS, type QuotaTicket } from '../../storage/session-quota.js';
import type { RequestContext } from '../context.js';

export function limitError(e: unknown): OciError | null {
  const full = storageFailure(e);
  if (full) return new OciError(507, 'STORAGE_FULL' as OciCode, `${full.message.replace(/^storage is full: /, 'the registry\'s storage is full: ')} (nothing was committed; retry once space is freed)`);
  if (isSnapyardError(e, 'LIMIT_EXCEEDED')) {
    const d = e.detail as { retryAfter?: number; status?: number } | undefined;
    if (d?.status === 413) return new OciError(413, 'SIZE_INVALID', e.message, e.detail);
    return new OciError(429, 'TOOMANYREQUESTS', e.message, e.detail, { 'Retry-After': String(d?.retryAfter ?? RETRY_AFTER_SECONDS) });
  }
  if (isSnapyardError(e, 'IN_USE')) return new OciError(405, 'UNSUPPORTED', e.message, e.detail);
  return null;
}

/** Runs a handler, answering storage limit errors as limitError says. */
export async function withLimits<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw limitError(e) ?? e;
  }
}

/** A place in the open-session caps for the caller (429 past them). */
export function takeSessionTicket(ctx: RequestContext): QuotaTicket {
  try {
    return ctx.store.sessions.take(ctx.user);
  } catch (e) {
    throw limitError(e) ?? e;
  }
}

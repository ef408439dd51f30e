import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import { OciError } from './oci-error.js';

/** The request body as a stream of pieces (the raw node request: no web-stream copy). */
export function bodyOf(incoming: IncomingMessage): AsyncIterable<Uint8Array> {
  return incoming;
}

/** Reads a whole body of at most `limit` bytes (413 beyond it). */
export async function readLimited(incoming: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(incoming.headers['content-length'] ?? NaN);
  if (declared > limit) {
    incoming.resume();
    throw new OciError(413, 'SIZE_INVALID', `body of ${declared} bytes exceeds the limit of ${limit}`);
  }
  const parts: Buffer[] = [];
  let n = 0;
  for await (const piece of incoming as AsyncIterable<Buffer>) {
    n += piece.byteLength;
    if (n > limit) {
      incoming.resume();
      throw new OciError(413, 'SIZE_INVALID', `body exceeds the limit of ${limit} bytes`);
    }
    parts.push(piece);
  }
  return Buffer.concat(parts, n);
}

/** A JSON body of at most `limit` bytes (undefined when empty); 400 when it is not JSON. */
export async function readJsonBody(incoming: IncomingMessage, limit: number): Promise<unknown> {
  const buf = await readLimited(incoming, limit);
  if (buf.byteLength === 0) return undefined;
  try {
    return JSON.parse(buf.toString('utf8')) as unknown;
  } catch {
    throw new OciError(400, 'UNSUPPORTED', 'request body is not JSON');
  }
}

/** A JSON body checked against `schema`; 400 naming what is wrong otherwise. */
export async function jsonBody<T>(incoming: IncomingMessage, schema: z.ZodType<T>, limit: number): Promise<T> {
  const r = schema.safeParse(await readJsonBody(incoming, limit));
  if (!r.success) throw new OciError(400, 'UNSUPPORTED', `invalid request: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** Drains a body we do not use, so the connection can be reused. */
export async function drain(incoming: IncomingMessage): Promise<void> {
  for await (const _ of incoming) { /* discard */ }
}

export interface ByteRange {
  start: number;
  /** Exclusive. */
  end: number;
}

/**
 * Parses a single `Range: bytes=a-b | a- | -n` against a size (RFC 9110
 * 14.1.2). Returns null when there is no usable Range header, and the whole
 * body is served: a malformed header, another unit or several ranges is
 * ignored, as the RFC allows. Throws 416 (with `Content-Range: bytes * /size`)
 * when the range cannot be satisfied: a start at or past the end, b < a,
 * `-0`, or any range of an empty blob. Numbers of any length are safe: past
 * 2^53 they only compare as huge (a start past the end, an end capped).
 */
export function parseRange(header: string | undefined, size: number): ByteRange | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/i.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  const unsatisfiable = () => new OciError(416, 'RANGE_INVALID', `range ${header.slice(0, 100)} not satisfiable for ${size} bytes`, undefined, { 'Content-Range': `bytes */${size}` });
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0 || size === 0) throw unsatisfiable();
    return { start: Math.max(0, size - n), end: size };
  }
  const start = Number(m[1]);
  if (start >= size || (m[2] !== '' && Number(m[2]) < start)) throw unsatisfiable();
  const last = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return { start, end: last + 1 };
}

/** Parses an upload's `Content-Range: <start>-<end>` (inclusive end; no unit, as the spec writes it). */
export function parseContentRange(header: string | undefined): { start: number; end: number } | null {
  if (header === undefined) return null;
  const m = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!m) throw new OciError(400, 'BLOB_UPLOAD_INVALID', `invalid Content-Range ${JSON.stringify(header)}`);
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (end < start) throw new OciError(416, 'BLOB_UPLOAD_INVALID', `invalid Content-Range ${header}`);
  return { start, end };
}

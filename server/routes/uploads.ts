import { randomUUID } from 'node:crypto';
import { checkDigest, checkName } from '../names.js';
import { OciError } from '../oci-error.js';
import { bodyOf, drain, parseContentRange } from '../http-util.js';
import { header, respond, type RequestContext } from '../context.js';
import type { UploadRecord } from '../../storage/meta/metadata.js';
import { isSha512Digest, type AnyDigest } from '../../storage/digest.js';
import { Forwarder } from '../forward.js';
import { acceptSha512, canonicalDigest, ingestUnderSha512 } from '../aliases.js';

function created(name: string, digest: AnyDigest): Response {
  return respond(201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest, 'Content-Length': '0' });
}

function progress(name: string, up: UploadRecord, status: number): Response {
  return respond(status, {
    Location: `/v2/${name}/blobs/uploads/${up.id}`,
    Range: `0-${Math.max(up.size - 1, 0)}`,
    'Docker-Upload-UUID': up.id,
    'Content-Length': '0',
  });
}

function tooBig(ctx: RequestContext): OciError {
  return new OciError(413, 'SIZE_INVALID', `a blob may have at most ${ctx.store.limits.maxBlobBytes} bytes (maxBlobBytes)`);
}

/** The request body, cut off with 413 past `room` bytes (chunked bodies declare no length). */
async function* capped(ctx: RequestContext, room: number): AsyncGenerator<Uint8Array> {
  let n = 0;
  for await (const piece of bodyOf(ctx.incoming)) {
    n += piece.byteLength;
    if (n > room) throw tooBig(ctx);
    yield piece;
  }
}

function declaredLength(ctx: RequestContext): number | undefined {
  const v = header(ctx, 'content-length');
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new OciError(400, 'SIZE_INVALID', `invalid Content-Length ${v}`);
  return n;
}

/**
 * POST /v2/<name>/blobs/uploads/: monolithic push (?digest=), cross-repository
 * mount (?mount=&from=), or a new session (429 past the open-session caps).
 */
export async function startUpload(ctx: RequestContext, name: string): Promise<Response> {
  const q = ctx.url.searchParams;
  const mount = q.get('mount');
  if (mount !== null) {
    const asked = checkDigest(mount, { anyAlgorithm: true });
    const digest = await canonicalDigest(ctx, asked);
    const from = q.get('from');
    // Under the commit lock, so GC's delete step never sees half of a mount.
    const mounted = from !== null && digest !== null && (await ctx.store.lock.run(async () => (await ctx.store.blobs.stat(checkName(from), digest)) !== null && (await ctx.store.meta.linkBlob(name, digest))));
    if (mounted) {
      await drain(ctx.incoming);
      return created(name, asked);
    }
    // Not mountable: fall back to an upload session, as the spec asks.
  }
  const digestParam = q.get('digest');
  if (digestParam !== null && mount === null) {
    const digest = checkDigest(digestParam, { anyAlgorithm: true });
    const len = declaredLength(ctx);
    if (len !== undefined && len > ctx.store.limits.maxBlobBytes) throw tooBig(ctx);
    const body = capped(ctx, ctx.store.limits.maxBlobBytes);
    if (isSha512Digest(digest)) await ingestUnderSha512(ctx, name, body, digest, len);
    else await ctx.store.blobs.ingest(name, body, { expectDigest: digest, ...(len !== undefined ? { expectSize: len } : {}) });
    return created(name, digest);
  }
  await drain(ctx.incoming);
  const ticket = ctx.store.sessions.take(ctx.user); // LIMIT_EXCEEDED: 429 with Retry-After
  const id = randomUUID();
  try {
    await ctx.store.meta.createUpload(id, name);
    ctx.store.uploads.open(id, name, ticket);
  } catch (e) {
    ticket.release();
    throw e;
  }
  return progress(name, (await ctx.store.meta.getUpload(id))!, 202);
}

const UPLOAD_ID = /^[a-zA-Z0-9-]{8,64}$/;

/**
 * When another replica holds upload `id` (its bytes are being chunked in
 * that replica's memory), the request relayed there and its answer; null
 * when it is handled here (held here, unknown, or relayed to us already).
 */
async function relayed(ctx: RequestContext, id: string): Promise<Response | null> {
  if (!ctx.forward || !UPLOAD_ID.test(id) || ctx.store.uploads.has(id) || Forwarder.wasForwarded(ctx)) return null;
  const holder = await ctx.store.coord.uploadHolder(id);
  return holder ? ctx.forward(holder) : null;
}

async function sessionOrThrow(ctx: RequestContext, name: string, id: string): Promise<UploadRecord> {
  const up = UPLOAD_ID.test(id) ? await ctx.store.meta.getUpload(id) : null;
  if (!up || up.repo !== name || !ctx.store.uploads.has(up.id)) {
    throw new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `upload ${id.slice(0, 80)} is not open in ${name}`);
  }
  return up;
}

/** Appends the request body to a session, enforcing Content-Range order. */
async function appendBody(ctx: RequestContext, up: UploadRecord, required: boolean): Promise<UploadRecord> {
  const range = parseContentRange(header(ctx, 'content-range'));
  const len = declaredLength(ctx);
  if (range) {
    if (range.start !== up.size) {
      await drain(ctx.incoming);
      throw new OciError(416, 'BLOB_UPLOAD_INVALID', `chunk starts at ${range.start}, upload has ${up.size} bytes`, undefined, {
        Location: ctx.url.pathname,
        Range: `0-${Math.max(up.size - 1, 0)}`,
        'Docker-Upload-UUID': up.id,
      });
    }
    if (len !== undefined && len !== range.end - range.start + 1) {
      await drain(ctx.incoming);
      throw new OciError(400, 'BLOB_UPLOAD_INVALID', `Content-Length ${len} does not match Content-Range ${range.start}-${range.end}`);
    }
  }
  if (!required && len === 0) return up;
  const limit = range ? range.end - range.start + 1 : len ?? Number.MAX_SAFE_INTEGER;
  const room = ctx.store.limits.maxBlobBytes - up.size;
  if (limit !== Number.MAX_SAFE_INTEGER && limit > room) {
    await drain(ctx.incoming);
    throw tooBig(ctx);
  }
  try {
    await ctx.store.uploads.append(up.id, capped(ctx, room), limit);
  } finally {
    // Whatever arrived counts, even from a request that broke off: the client resumes from Range.
    await ctx.store.meta.setUploadSize(up.id, ctx.store.uploads.size(up.id));
  }
  const after = (await ctx.store.meta.getUpload(up.id))!;
  if (range && after.size - up.size !== limit) {
    throw new OciError(400, 'BLOB_UPLOAD_INVALID', `chunk has ${after.size - up.size} bytes, Content-Range says ${limit}`);
  }
  return after;
}

/** PATCH /v2/<name>/blobs/uploads/<id>: append a chunk (416 when out of order). */
export async function patchUpload(ctx: RequestContext, name: string, id: string): Promise<Response> {
  const there = await relayed(ctx, id);
  if (there) return there;
  const up0 = await sessionOrThrow(ctx, name, id);
  return ctx.store.uploads.locked(up0.id, async () => {
    const up = await appendBody(ctx, await sessionOrThrow(ctx, name, id), true);
    return progress(name, up, 202);
  });
}

/** GET /v2/<name>/blobs/uploads/<id>: how much the session holds. */
export async function uploadStatus(ctx: RequestContext, name: string, id: string): Promise<Response> {
  const there = await relayed(ctx, id);
  if (there) return there;
  return progress(name, await sessionOrThrow(ctx, name, id), 204);
}

/** PUT /v2/<name>/blobs/uploads/<id>?digest=: last chunk (optional), then verify and commit. */
export async function finishUpload(ctx: RequestContext, name: string, id: string): Promise<Response> {
  const there = await relayed(ctx, id);
  if (there) return there;
  const up0 = await sessionOrThrow(ctx, name, id);
  const digestParam = ctx.url.searchParams.get('digest');
  if (digestParam === null) {
    await drain(ctx.incoming);
    throw new OciError(400, 'DIGEST_INVALID', 'the digest query parameter is required to finish an upload');
  }
  const digest = checkDigest(digestParam, { anyAlgorithm: true });
  return ctx.store.uploads.locked(up0.id, async () => {
    const up = await appendBody(ctx, await sessionOrThrow(ctx, name, id), false);
    await ctx.store.meta.deleteUpload(up.id);
    // On a digest mismatch nothing is committed (the chunks stay unreferenced for GC), and the session is over.
    await ctx.store.uploads.finish(up.id, async (result) => {
      if (isSha512Digest(digest)) await acceptSha512(ctx, result, digest);
      else if (result.digest !== digest) {
        throw new OciError(400, 'DIGEST_INVALID', `uploaded content hashes to ${result.digest}, not ${digest}`, { expected: digest, actual: result.digest });
      }
      await ctx.store.blobs.commit(name, result);
    });
    return created(name, digest);
  });
}

/** DELETE /v2/<name>/blobs/uploads/<id>: cancel. */
export async function cancelUpload(ctx: RequestContext, name: string, id: string): Promise<Response> {
  const there = await relayed(ctx, id);
  if (there) return there;
  const up = await sessionOrThrow(ctx, name, id);
  await ctx.store.meta.deleteUpload(up.id);
  ctx.store.uploads.cancel(up.id);
  await drain(ctx.incoming);
  return respond(204);
}

import { checkDigest } from '../names.js';
import { canonicalDigest } from '../aliases.js';
import { OciError } from '../oci-error.js';
import { parseRange } from '../http-util.js';
import { header, respond, sendStream, type RequestContext } from '../context.js';
import type { BlobRecord } from '../../storage/meta/metadata.js';

/** The blob a digest names in `name` (a sha512 through its alias: server/aliases.ts). */
async function blobOrThrow(ctx: RequestContext, name: string, digestStr: string): Promise<BlobRecord> {
  const asked = checkDigest(digestStr, { anyAlgorithm: true });
  const digest = await canonicalDigest(ctx, asked);
  const blob = digest ? await ctx.store.blobs.stat(name, digest) : null;
  if (!blob) throw new OciError(404, 'BLOB_UNKNOWN', `blob ${asked} is not in ${name}`, { digest: asked });
  return blob;
}

/** GET and HEAD /v2/<name>/blobs/<digest>: the exact bytes pushed, Range supported. */
export async function getBlob(ctx: RequestContext, name: string, digestStr: string): Promise<Response> {
  const blob = await blobOrThrow(ctx, name, digestStr);
  const range = parseRange(header(ctx, 'range'), blob.size);
  const headers: Record<string, string> = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digestStr, // the digest asked (checked): sha256, or a sha512 the blob was pushed under
    'Accept-Ranges': 'bytes',
    ETag: `"${digestStr}"`,
    'Cache-Control': 'max-age=31536000',
  };
  const start = range?.start ?? 0;
  const end = range?.end ?? blob.size;
  headers['Content-Length'] = String(end - start);
  if (range) headers['Content-Range'] = `bytes ${start}-${end - 1}/${blob.size}`;
  const status = range ? 206 : 200;
  if (ctx.method === 'HEAD') return respond(status, headers);
  const index = await ctx.store.blobs.index(blob);
  const chunks = ctx.store.chunks;
  return sendStream(ctx, status, headers, ctx.store.blobs.read(index, start, end), chunks.release ? (b) => chunks.release!(b) : undefined);
}

/**
 * DELETE /v2/<name>/blobs/<digest>: unlinks the blob from the repository (GC
 * frees its chunks). A blob a manifest of the repository references is not
 * deletable while that manifest exists (405 UNSUPPORTED naming them, as
 * distribution answers a delete it does not allow): delete the manifests first.
 */
export async function deleteBlob(ctx: RequestContext, name: string, digestStr: string): Promise<Response> {
  const blob = await blobOrThrow(ctx, name, digestStr);
  const r = await ctx.store.meta.unlinkBlobIfUnused(name, blob.digest);
  if (r.usedBy.length > 0) {
    throw new OciError(405, 'UNSUPPORTED', `blob ${blob.digest} is used by manifest${r.usedBy.length > 1 ? 's' : ''} ${r.usedBy.join(', ')} of ${name}: delete ${r.usedBy.length > 1 ? 'them' : 'it'} first`, {
      digest: blob.digest,
      manifests: r.usedBy,
    });
  }
  return respond(202, { 'Docker-Content-Digest': digestStr });
}

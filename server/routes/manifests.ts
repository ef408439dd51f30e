import { parseReference } from '../names.js';
import { OciError } from '../oci-error.js';
import { readLimited } from '../http-util.js';
import { header, respond, type RequestContext } from '../context.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../manifest.js';
import { sha256, type Digest } from '../../storage/digest.js';
import type { ManifestRecord } from '../../storage/metadata.js';

export function resolveManifest(ctx: RequestContext, name: string, reference: string): ManifestRecord {
  const ref = parseReference(reference, { lookup: true });
  const meta = ctx.store.meta;
  if (!meta.repoExists(name)) throw new OciError(404, 'NAME_UNKNOWN', `repository ${name} is not known`);
  const digest = ref.digest ?? meta.resolveTag(name, ref.tag!);
  const m = digest ? meta.getManifest(name, digest) : null;
  if (!m) throw new OciError(404, 'MANIFEST_UNKNOWN', `manifest ${reference} is not in ${name}`, { reference });
  return m;
}

/** GET and HEAD /v2/<name>/manifests/<reference>. */
export function getManifest(ctx: RequestContext, name: string, reference: string): Response {
  const m = resolveManifest(ctx, name, reference);
  const headers = {
    'Content-Type': m.mediaType,
    'Content-Length': String(m.size),
    'Docker-Content-Digest': m.digest,
    ETag: `"${m.digest}"`,
  };
  return respond(200, headers, ctx.method === 'HEAD' ? undefined : m.content);
}

/** PUT /v2/<name>/manifests/<reference>: validate, check references, store, tag. */
export async function putManifest(ctx: RequestContext, name: string, reference: string): Promise<Response> {
  const ref = parseReference(reference);
  const body = await readLimited(ctx.incoming, MAX_MANIFEST_BYTES);
  const digest = sha256(body);
  if (ref.digest && ref.digest !== digest) {
    throw new OciError(400, 'DIGEST_INVALID', `manifest hashes to ${digest}, not ${ref.digest}`, { expected: ref.digest, actual: digest });
  }
  const parsed = parseManifest(body, header(ctx, 'content-type'));
  // Under the commit lock: GC's delete step (which may unlink stale blobs) cannot interleave.
  const { missing } = await ctx.store.lock.run(() => ctx.store.meta.commitManifest(
    {
      repo: name,
      digest,
      mediaType: parsed.mediaType,
      artifactType: parsed.artifactType,
      subject: parsed.subject,
      annotations: parsed.annotations,
      content: body,
      refs: parsed.refs,
      tag: ref.tag ?? null,
    },
    // `snapyard push` says so (X-Snapyard-Source: push): the tag history then tells pushes from other PUTs.
    header(ctx, 'x-snapyard-source') === 'push' ? 'push' : 'oci-put',
  ));
  if (missing.length > 0) {
    const blob = missing.find((r) => r.kind === 'blob');
    if (blob) throw new OciError(400, 'MANIFEST_BLOB_UNKNOWN', `blob ${blob.digest} is not in ${name}`, { digest: blob.digest });
    throw new OciError(400, 'MANIFEST_UNKNOWN', `manifest ${missing[0]!.digest} is not in ${name}`, { digest: missing[0]!.digest });
  }
  const headers: Record<string, string> = {
    Location: `/v2/${name}/manifests/${digest}`,
    'Docker-Content-Digest': digest,
    'Content-Length': '0',
  };
  if (parsed.subject) headers['OCI-Subject'] = parsed.subject;
  return respond(201, headers);
}

/** DELETE /v2/<name>/manifests/<reference>: a digest deletes the manifest (and its tags), a tag only the tag. */
export function deleteManifest(ctx: RequestContext, name: string, reference: string): Response {
  const m = resolveManifest(ctx, name, reference);
  const ref = parseReference(reference, { lookup: true });
  if (ref.tag !== undefined) ctx.store.meta.setTag(name, ref.tag, null, 'oci-delete');
  else ctx.store.meta.deleteManifest(name, m.digest as Digest, 'oci-delete');
  return respond(202);
}

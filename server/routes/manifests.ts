import { checkDigest, parseReference } from '../names.js';
import { canonicalDigest } from '../aliases.js';
import { OciError } from '../oci-error.js';
import { readLimited } from '../http-util.js';
import { header, respond, type RequestContext } from '../context.js';
import { MAX_MANIFEST_BYTES, parseManifest } from '../manifest.js';
import { isSha512Digest, sha256, sha512, type Digest, type Sha512Digest } from '../../storage/digest.js';
import type { ManifestRecord } from '../../storage/meta/metadata.js';

/** A manifest reference as asked: a tag, a sha256, or a sha512 (an alias of a sha256: server/aliases.ts). */
type Asked = { tag: string; digest?: undefined; alias?: undefined } | { digest: Digest; tag?: undefined; alias?: undefined } | { alias: Sha512Digest; tag?: undefined; digest?: undefined };

function askedReference(reference: string, lookup: boolean): Asked {
  if (reference.startsWith('sha512:')) return { alias: checkDigest(reference, { anyAlgorithm: true }) as Sha512Digest };
  return parseReference(reference, { lookup });
}

async function lookUp(ctx: RequestContext, name: string, reference: string): Promise<{ m: ManifestRecord; asked: Asked }> {
  const asked = askedReference(reference, true);
  const meta = ctx.store.meta;
  if (!(await meta.repoExists(name))) throw new OciError(404, 'NAME_UNKNOWN', `repository ${name} is not known`);
  const digest = asked.alias ? await canonicalDigest(ctx, asked.alias) : asked.digest ?? (await meta.resolveTag(name, asked.tag!));
  const m = digest ? await meta.getManifest(name, digest) : null;
  if (!m) throw new OciError(404, 'MANIFEST_UNKNOWN', `manifest ${reference} is not in ${name}`, { reference });
  return { m, asked };
}

export async function resolveManifest(ctx: RequestContext, name: string, reference: string): Promise<ManifestRecord> {
  return (await lookUp(ctx, name, reference)).m;
}

/** GET and HEAD /v2/<name>/manifests/<reference>. */
export async function getManifest(ctx: RequestContext, name: string, reference: string): Promise<Response> {
  const { m, asked } = await lookUp(ctx, name, reference);
  const digest = asked.alias ?? m.digest;
  const headers = {
    'Content-Type': m.mediaType,
    'Content-Length': String(m.size),
    'Docker-Content-Digest': digest,
    ETag: `"${digest}"`,
  };
  return respond(200, headers, ctx.method === 'HEAD' ? undefined : m.content);
}

/** PUT /v2/<name>/manifests/<reference>: validate, check references, store, tag. */
export async function putManifest(ctx: RequestContext, name: string, reference: string): Promise<Response> {
  const ref = askedReference(reference, false);
  const body = await readLimited(ctx.incoming, MAX_MANIFEST_BYTES);
  const digest = sha256(body);
  const named = ref.alias ?? ref.digest;
  const actual = ref.alias ? sha512(body) : digest;
  if (named && named !== actual) {
    throw new OciError(400, 'DIGEST_INVALID', `manifest hashes to ${actual}, not ${named}`, { expected: named, actual });
  }
  const parsed = parseManifest(body, header(ctx, 'content-type'));
  // Descriptors by sha512 name what the alias names (a blob pushed under that sha512); unknown ones stay as given (and are missing).
  const canonical = async <D extends string>(d: D): Promise<D> => (isSha512Digest(d) ? (((await canonicalDigest(ctx, d)) ?? d) as D) : d);
  const refs = await Promise.all(parsed.refs.map(async (r) => ({ ...r, digest: await canonical(r.digest) })));
  const subject = parsed.subject === null ? null : await canonical(parsed.subject);
  if (ref.alias) await ctx.store.meta.addAlias(ref.alias, digest); // before the commit: a committed manifest is always reachable by it
  // Under the commit lock: GC's delete step (which may unlink stale blobs) cannot interleave.
  const { missing } = await ctx.store.lock.run(() => ctx.store.meta.commitManifest(
    {
      repo: name,
      digest,
      mediaType: parsed.mediaType,
      artifactType: parsed.artifactType,
      subject,
      annotations: parsed.annotations,
      content: body,
      refs,
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
    Location: `/v2/${name}/manifests/${named ?? digest}`,
    'Docker-Content-Digest': named ?? digest,
    'Content-Length': '0',
  };
  if (parsed.subject) headers['OCI-Subject'] = parsed.subject;
  return respond(201, headers);
}

/** DELETE /v2/<name>/manifests/<reference>: a digest deletes the manifest (and its tags), a tag only the tag. */
export async function deleteManifest(ctx: RequestContext, name: string, reference: string): Promise<Response> {
  const { m, asked: ref } = await lookUp(ctx, name, reference);
  if (ref.tag !== undefined) await ctx.store.meta.setTag(name, ref.tag, null, 'oci-delete');
  else await ctx.store.meta.deleteManifest(name, m.digest as Digest, 'oci-delete');
  return respond(202);
}

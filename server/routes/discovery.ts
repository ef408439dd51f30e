import { checkDigest } from '../names.js';
import { canonicalDigest } from '../aliases.js';
import type { Digest } from '../../storage/digest.js';
import { OciError } from '../oci-error.js';
import { respond, type RequestContext } from '../context.js';
import { MT } from '../manifest.js';

/** GET /v2/<name>/tags/list?n=&last=: lexical order, paginated with a Link header. */
export async function listTags(ctx: RequestContext, name: string): Promise<Response> {
  const meta = ctx.store.meta;
  if (!(await meta.repoExists(name))) throw new OciError(404, 'NAME_UNKNOWN', `repository ${name} is not known`);
  const q = ctx.url.searchParams;
  const nParam = q.get('n');
  let n = Number.MAX_SAFE_INTEGER;
  if (nParam !== null) {
    if (!/^\d+$/.test(nParam)) throw new OciError(400, 'UNSUPPORTED', `invalid n ${JSON.stringify(nParam)}`);
    n = Number(nParam);
  }
  const last = q.get('last') ?? '';
  const tags = n === 0 ? [] : await meta.listTags(name, Math.min(n, 100_000) + 1, last);
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (tags.length > n) {
    tags.length = n;
    headers.Link = `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(tags[tags.length - 1]!)}>; rel="next"`;
  }
  return respond(200, headers, JSON.stringify({ name, tags }));
}

/** GET /v2/<name>/referrers/<digest>?artifactType=: manifests whose subject is <digest>. */
export async function listReferrers(ctx: RequestContext, name: string, digestStr: string): Promise<Response> {
  const asked = checkDigest(digestStr, { anyAlgorithm: true });
  const filter = ctx.url.searchParams.get('artifactType');
  const headers: Record<string, string> = { 'Content-Type': MT.ociIndex };
  // A subject named by sha512 is stored under the sha256 it resolves to (or as given, when it was not pushed under it).
  const canonical = await canonicalDigest(ctx, asked);
  const subjects = [...new Set([asked, ...(canonical ? [canonical] : [])])] as Digest[];
  let found = (await ctx.store.meta.repoExists(name)) ? (await Promise.all(subjects.map((d) => ctx.store.meta.referrers(name, d)))).flat() : [];
  if (filter !== null) {
    found = found.filter((m) => m.artifactType === filter);
    headers['OCI-Filters-Applied'] = 'artifactType';
  }
  const manifests = found.map((m) => ({
    mediaType: m.mediaType,
    digest: m.digest,
    size: m.size,
    ...(m.artifactType ? { artifactType: m.artifactType } : {}),
    ...(m.annotations ? { annotations: m.annotations } : {}),
  }));
  return respond(200, headers, JSON.stringify({ schemaVersion: 2, mediaType: MT.ociIndex, manifests }));
}

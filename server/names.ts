import { OciError } from './oci-error.js';
import { isDigest, DIGEST_GRAMMAR, type Digest } from '../storage/digest.js';
import { isRepoName, TAG_RE } from '../storage/ref-grammar.js';

export { MAX_NAME_LENGTH, NAME_RE, TAG_RE } from '../storage/ref-grammar.js';

export function checkName(name: string): string {
  if (!isRepoName(name)) {
    throw new OciError(400, 'NAME_INVALID', `invalid repository name ${JSON.stringify(name.slice(0, 300))}`);
  }
  return name;
}

export function checkDigest(s: string): Digest {
  if (isDigest(s)) return s;
  if (DIGEST_GRAMMAR.test(s)) throw new OciError(400, 'DIGEST_INVALID', `unsupported digest algorithm or encoding: ${s}`);
  throw new OciError(400, 'DIGEST_INVALID', `invalid digest ${JSON.stringify(s.slice(0, 200))}`);
}

export type Reference = { tag: string; digest?: undefined } | { digest: Digest; tag?: undefined };

/** A manifest reference: a tag, or a digest (anything with a colon). */
export function parseReference(ref: string): Reference {
  if (ref.includes(':')) return { digest: checkDigest(ref) };
  if (!TAG_RE.test(ref)) throw new OciError(400, 'MANIFEST_INVALID', `invalid tag ${JSON.stringify(ref.slice(0, 200))}`);
  return { tag: ref };
}

export type Route =
  | { kind: 'base' }
  | { kind: 'uploads'; name: string }
  | { kind: 'upload'; name: string; id: string }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'tags'; name: string }
  | { kind: 'referrers'; name: string; digest: string };

const ROUTES: Array<[RegExp, (m: RegExpExecArray) => Route]> = [
  [/^\/v2\/?$/, () => ({ kind: 'base' })],
  [/^\/v2\/(.+)\/blobs\/uploads\/?$/, (m) => ({ kind: 'uploads', name: m[1]! })],
  [/^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, (m) => ({ kind: 'upload', name: m[1]!, id: m[2]! })],
  [/^\/v2\/(.+)\/blobs\/([^/]+)$/, (m) => ({ kind: 'blob', name: m[1]!, digest: m[2]! })],
  [/^\/v2\/(.+)\/manifests\/([^/]+)$/, (m) => ({ kind: 'manifest', name: m[1]!, reference: m[2]! })],
  [/^\/v2\/(.+)\/tags\/list\/?$/, (m) => ({ kind: 'tags', name: m[1]! })],
  [/^\/v2\/(.+)\/referrers\/([^/]+)$/, (m) => ({ kind: 'referrers', name: m[1]!, digest: m[2]! })],
];

/** Splits a /v2/ path into its route; the name is validated before anything else sees it. */
export function matchRoute(path: string): Route | null {
  for (const [re, make] of ROUTES) {
    const m = re.exec(path);
    if (!m) continue;
    const r = make(m);
    if ('name' in r) checkName(r.name);
    return r;
  }
  return null;
}

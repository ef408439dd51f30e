import { OciError } from './oci-error.js';
import { isDigest, isSha512Digest, DIGEST_GRAMMAR, type AnyDigest, type Digest } from '../storage/digest.js';
import { isRepoName, TAG_RE } from '../storage/protocol/ref-grammar.js';

export { MAX_NAME_LENGTH, NAME_RE, TAG_RE } from '../storage/protocol/ref-grammar.js';

export function checkName(name: string): string {
  if (!isRepoName(name)) {
    throw new OciError(400, 'NAME_INVALID', `invalid repository name ${JSON.stringify(name.slice(0, 300))}`);
  }
  return name;
}

/**
 * A digest from a request: sha256 (lower-case hex); with `anyAlgorithm`,
 * sha512 as well (blobs and manifests are known by every digest they were
 * pushed under: storage/meta/digest-aliases.ts). 400 DIGEST_INVALID otherwise.
 */
export function checkDigest(s: string): Digest;
export function checkDigest(s: string, opts: { anyAlgorithm: true }): AnyDigest;
export function checkDigest(s: string, opts: { anyAlgorithm?: boolean } = {}): AnyDigest {
  if (isDigest(s) || (opts.anyAlgorithm && isSha512Digest(s))) return s;
  if (DIGEST_GRAMMAR.test(s)) throw new OciError(400, 'DIGEST_INVALID', `unsupported digest algorithm or encoding: ${s.slice(0, 200)}`);
  throw new OciError(400, 'DIGEST_INVALID', `invalid digest ${JSON.stringify(s.slice(0, 200))}`);
}

export type Reference = { tag: string; digest?: undefined } | { digest: Digest; tag?: undefined };

/**
 * A manifest reference: a tag, or a digest (anything with a colon). A tag
 * that is not valid is 400 MANIFEST_INVALID where a manifest would be
 * stored under it (PUT), and 404 MANIFEST_UNKNOWN where one is looked up
 * (`lookup`: GET, HEAD, DELETE; nothing can be there).
 */
export function parseReference(ref: string, opts: { lookup?: boolean } = {}): Reference {
  if (ref.includes(':')) return { digest: checkDigest(ref) };
  if (!TAG_RE.test(ref)) {
    const shown = JSON.stringify(ref.slice(0, 200));
    if (opts.lookup) throw new OciError(404, 'MANIFEST_UNKNOWN', `manifest ${shown} is not known (not a valid tag)`, { reference: ref.slice(0, 200) });
    throw new OciError(400, 'MANIFEST_INVALID', `invalid tag ${shown}`);
  }
  return { tag: ref };
}

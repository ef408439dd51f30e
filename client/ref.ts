import { isDigest } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { isRepoName, TAG_RE } from '../storage/protocol/ref-grammar.js';

/** A snapshot reference: `repo:tag` or `repo@sha256:<hex>` (host prefixes are not part of it: see --registry). */
export interface Ref {
  repo: string;
  /** The tag or the manifest digest, as the /v2/ API takes it. */
  reference: string;
  tag?: string;
  digest?: string;
}


export function parseRef(s: string): Ref {
  const at = s.indexOf('@');
  if (at >= 0) {
    const repo = s.slice(0, at);
    const digest = s.slice(at + 1);
    if (!isRepoName(repo) || !isDigest(digest)) throw bad(s);
    return { repo, reference: digest, digest };
  }
  const colon = s.lastIndexOf(':');
  if (colon < 0 || s.slice(colon).includes('/')) throw bad(s);
  const repo = s.slice(0, colon);
  const tag = s.slice(colon + 1);
  if (!isRepoName(repo) || !TAG_RE.test(tag)) throw bad(s);
  return { repo, reference: tag, tag };
}

function bad(s: string): SnapyardError {
  return new SnapyardError('INVALID_ARGUMENT', `${JSON.stringify(s)} is not a reference (repo:tag or repo@sha256:<64 hex>)`);
}

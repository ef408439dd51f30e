import { SnapyardError } from '../storage/errors.js';

/** A snapshot reference: `repo:tag` or `repo@sha256:<hex>` (host prefixes are not part of it: see --registry). */
export interface Ref {
  repo: string;
  /** The tag or the manifest digest, as the /v2/ API takes it. */
  reference: string;
  tag?: string;
  digest?: string;
}

const NAME_RE = /^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

export function parseRef(s: string): Ref {
  const at = s.indexOf('@');
  if (at >= 0) {
    const repo = s.slice(0, at);
    const digest = s.slice(at + 1);
    if (!NAME_RE.test(repo) || !/^sha256:[0-9a-f]{64}$/.test(digest)) throw bad(s);
    return { repo, reference: digest, digest };
  }
  const colon = s.lastIndexOf(':');
  if (colon < 0 || s.slice(colon).includes('/')) throw bad(s);
  const repo = s.slice(0, colon);
  const tag = s.slice(colon + 1);
  if (!NAME_RE.test(repo) || !TAG_RE.test(tag)) throw bad(s);
  return { repo, reference: tag, tag };
}

function bad(s: string): SnapyardError {
  return new SnapyardError('INVALID_ARGUMENT', `${JSON.stringify(s)} is not a reference (repo:tag or repo@sha256:<64 hex>)`);
}

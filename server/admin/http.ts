import { readJsonBody } from '../http-util.js';
import { respond, type RequestContext } from '../context.js';
import { checkDigest, checkName, TAG_RE } from '../names.js';
import { OciError } from '../oci-error.js';
import type { Digest } from '../../storage/digest.js';

/** Admin requests carry small JSON bodies. */
const MAX_BODY = 64 * 1024;

/** A repository path pattern group: names start with [a-z0-9], so `_admin` never matches it. */
export const NAME = '([a-z0-9].*)';

export function json(status: number, body: unknown): Response {
  return respond(status, { 'Content-Type': 'application/json' }, JSON.stringify(body));
}

/** The request's JSON object body ({} when empty); 400 when it is not a JSON object. */
export async function readJson(ctx: RequestContext): Promise<Record<string, unknown>> {
  const v = await readJsonBody(ctx.incoming, MAX_BODY);
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new OciError(400, 'UNSUPPORTED', 'request body must be a JSON object');
  return v as Record<string, unknown>;
}

/** A repository named in the path: valid and known. */
export function repoOf(ctx: RequestContext, raw: string): string {
  const name = checkName(raw);
  if (!ctx.store.meta.repoExists(name)) throw new OciError(404, 'NAME_UNKNOWN', `repository ${name} is not known`, { name });
  return name;
}

export function checkTag(tag: string): string {
  if (!TAG_RE.test(tag)) throw new OciError(400, 'MANIFEST_INVALID', `invalid tag ${JSON.stringify(tag.slice(0, 200))}`);
  return tag;
}

/** A tag's current digest; 404 MANIFEST_UNKNOWN when the tag does not exist. */
export function tagTarget(ctx: RequestContext, repo: string, tag: string): Digest {
  const d = ctx.store.meta.resolveTag(repo, tag);
  if (!d) throw new OciError(404, 'MANIFEST_UNKNOWN', `tag ${repo}:${tag} does not exist`, { tag });
  return d;
}

/** A manifest digest that must exist in `repo` (404 MANIFEST_UNKNOWN otherwise, with `why` in the message). */
export function existingManifest(ctx: RequestContext, repo: string, digest: string, why = ''): Digest {
  const d = checkDigest(digest);
  if (!ctx.store.meta.manifestExists(repo, d)) {
    throw new OciError(404, 'MANIFEST_UNKNOWN', `${why}manifest ${d} is not in ${repo} (deleted?)`, { digest: d });
  }
  return d;
}

/** A non-negative whole number from a JSON body or query, or the default. */
export function wholeNumber(v: unknown, name: string, dflt?: number): number {
  if (v === undefined || v === null || v === '') {
    if (dflt === undefined) throw new OciError(400, 'UNSUPPORTED', `${name} is required`);
    return dflt;
  }
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new OciError(400, 'UNSUPPORTED', `${name} must be a whole number`);
  return n;
}

export const iso = (ms: number): string => new Date(ms).toISOString();

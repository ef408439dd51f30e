import type { z } from 'zod';
import { readJsonBody } from '../http-util.js';
import { JSON_BODY } from '../route-table.js';
import { respond, type RequestContext } from '../context.js';
import { checkDigest, checkName, TAG_RE } from '../names.js';
import { OciError } from '../oci-error.js';
import type { Digest } from '../../storage/digest.js';


/** A repository path pattern group: names start with [a-z0-9], so `_admin` never matches it. */
export const NAME = '([a-z0-9].*)';

export function json(status: number, body: unknown): Response {
  return respond(status, { 'Content-Type': 'application/json' }, JSON.stringify(body));
}

/** The request's JSON object body ({} when empty); 400 when it is not a JSON object. */
export async function readJson(ctx: RequestContext): Promise<Record<string, unknown>> {
  const v = await readJsonBody(ctx.incoming, JSON_BODY);
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new OciError(400, 'UNSUPPORTED', 'request body must be a JSON object');
  return v as Record<string, unknown>;
}

/** The request's JSON object body ({} when empty) checked against one of the shared schemas (storage/protocol/api.ts). */
export async function readBody<T>(ctx: RequestContext, schema: z.ZodType<T>): Promise<T> {
  const r = schema.safeParse(await readJson(ctx));
  if (!r.success) throw new OciError(400, 'UNSUPPORTED', `invalid request: ${r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** A repository named in the path: valid and known. */
export async function repoOf(ctx: RequestContext, raw: string): Promise<string> {
  const name = checkName(raw);
  if (!(await ctx.store.meta.repoExists(name))) throw new OciError(404, 'NAME_UNKNOWN', `repository ${name} is not known`, { name });
  return name;
}

export function checkTag(tag: string): string {
  if (!TAG_RE.test(tag)) throw new OciError(400, 'MANIFEST_INVALID', `invalid tag ${JSON.stringify(tag.slice(0, 200))}`);
  return tag;
}

/** A tag's current digest; 404 MANIFEST_UNKNOWN when the tag does not exist. */
export const iso = (ms: number): string => new Date(ms).toISOString();

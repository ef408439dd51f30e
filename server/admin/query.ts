/** Query parameters of admin GET endpoints, checked with zod like the JSON bodies (400 UNSUPPORTED naming the bad one). */
import { z } from 'zod';
import type { RequestContext } from '../context.js';
import { OciError } from '../oci-error.js';

export function readQuery<T>(ctx: RequestContext, schema: z.ZodType<T>): T {
  const r = schema.safeParse(Object.fromEntries(ctx.url.searchParams));
  if (!r.success) throw new OciError(400, 'UNSUPPORTED', `invalid query: ${r.error.issues.map((i) => `${i.path.join('.') || 'query'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/** `?offset=&n=`: a page of a list sorted on the server; n at most 500. */
export const pageQuery = (defaultN = 50) => ({
  offset: z.coerce.number().int().min(0).default(0),
  n: z.coerce.number().int().min(1).max(500).default(defaultN),
});

export function page<T>(items: T[], q: { offset: number; n: number }): { total: number; offset: number; n: number; items: T[] } {
  return { total: items.length, offset: q.offset, n: q.n, items: items.slice(q.offset, q.offset + q.n) };
}

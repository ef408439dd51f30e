/**
 * Tags through the admin API: point a tag at a snapshot, remove it, its
 * history, rollback: the rules are storage/meta/lifecycle.ts; every move is
 * recorded by Metadata (tag_events) with its source.
 */
import { JSON_BODY, repo } from '../route-table.js';
import type { RequestContext } from '../context.js';
import { parseReference } from '../names.js';
import { OciError } from '../oci-error.js';
import type { AdminRoute } from './types.js';
import { checkTag, iso, json, NAME, readBody, repoOf } from './http.js';
import { rollbackRequest, tagRequest } from '../../storage/protocol/api.js';
import { z } from 'zod';
import { readQuery } from './query.js';

/** `?offset=&n=` on the history: a page of the events (newest first) and `total`; without n, every event. */
const historyQuery = z.object({ offset: z.coerce.number().int().min(0).default(0), n: z.coerce.number().int().min(1).max(1000).optional() }).strict();

const TAG = '([^/]+)';

/** PUT /snapyard/v1/<name>/_tags/<tag> {"target": "<tag>" | "<digest>"}: point the tag at the target's manifest. */
async function putTag(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  const body = await readBody(ctx, tagRequest);
  const ref = parseReference(body.target);
  return json(200, await ctx.store.meta.moveTag(repo, tag, ref.digest !== undefined ? { digest: ref.digest } : { tag: ref.tag }));
}

/** DELETE /snapyard/v1/<name>/_tags/<tag>: remove the tag (the manifest stays). */
async function deleteTag(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  return json(200, { repository: repo, tag, old: await ctx.store.meta.removeTag(repo, tag) });
}

/** GET /snapyard/v1/<name>/_tags/<tag>/_history: every move, newest first. */
async function history(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  const meta = ctx.store.meta;
  const q = readQuery(ctx, historyQuery);
  const events = await meta.tagHistory(repo, tag);
  const current = await meta.resolveTag(repo, tag);
  if (events.length === 0 && current === null) throw new OciError(404, 'MANIFEST_UNKNOWN', `tag ${repo}:${tag} has no history`, { tag });
  const shown = events.slice(q.offset, q.n === undefined ? undefined : q.offset + q.n);
  return json(200, {
    repository: repo,
    tag,
    current,
    total: events.length,
    offset: q.offset,
    events: shown.map((e) => ({ time: iso(e.atMs), old: e.oldDigest, new: e.newDigest, source: e.source })),
  });
}

/** POST /snapyard/v1/<name>/_tags/<tag>/_rollback {"steps": N} | {"to": digest}: storage/meta/lifecycle.ts rollbackTag. */
async function rollback(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  const body = await readBody(ctx, rollbackRequest);
  return json(200, await ctx.store.meta.rollbackTag(repo, tag, { ...(body.steps !== undefined ? { steps: body.steps } : {}), ...(body.to !== undefined ? { to: body.to } : {}) }));
}

export const tagRoutes: AdminRoute[] = [
  { name: 'admin.tag.history', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}/_history$`), needs: repo('pull'), bodyLimit: 0, handle: history },
  { name: 'admin.tag.rollback', method: 'POST', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}/_rollback$`), needs: repo('pull', 'push'), bodyLimit: JSON_BODY, handle: rollback },
  { name: 'admin.tag.put', method: 'PUT', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}$`), needs: repo('pull', 'push'), bodyLimit: JSON_BODY, handle: putTag },
  { name: 'admin.tag.delete', method: 'DELETE', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}$`), needs: repo('delete'), bodyLimit: JSON_BODY, handle: deleteTag },
];

/**
 * Tags through the admin API: point a tag at a snapshot, remove it, its
 * history, rollback. Every move is recorded by Metadata (tag_events) with
 * the source named in tag-versions.ts SOURCE.
 */
import { JSON_BODY, repo } from '../route-table.js';
import type { RequestContext } from '../context.js';
import { parseReference } from '../names.js';
import { OciError } from '../oci-error.js';
import type { Digest } from '../../storage/digest.js';
import type { AdminRoute } from './types.js';
import { checkTag, existingManifest, iso, json, NAME, readBody, repoOf, tagTarget } from './http.js';
import { rollbackRequest, tagRequest } from '../../storage/protocol/api.js';
import { SOURCE, tagVersions } from './tag-versions.js';

const TAG = '([^/]+)';

/** PUT /snapyard/v1/<name>/_tags/<tag> {"target": "<tag>" | "<digest>"}: point the tag at the target's manifest. */
async function putTag(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  const body = await readBody(ctx, tagRequest);
  const meta = ctx.store.meta;
  const out = meta.relievingTx(() => {
    const ref = parseReference(body.target);
    const target = ref.digest !== undefined ? existingManifest(ctx, repo, ref.digest) : tagTarget(ctx, repo, ref.tag!);
    const old = meta.resolveTag(repo, tag);
    meta.setTag(repo, tag, target, SOURCE.tag);
    return { repository: repo, tag, old, new: target };
  });
  return json(200, out);
}

/** DELETE /snapyard/v1/<name>/_tags/<tag>: remove the tag (the manifest stays). */
function deleteTag(ctx: RequestContext, m: RegExpExecArray): Response {
  const repo = repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  const meta = ctx.store.meta;
  const old = meta.relievingTx(() => {
    const d = tagTarget(ctx, repo, tag);
    meta.setTag(repo, tag, null, SOURCE.rm);
    return d;
  });
  return json(200, { repository: repo, tag, old });
}

/** GET /snapyard/v1/<name>/_tags/<tag>/_history: every move, newest first. */
function history(ctx: RequestContext, m: RegExpExecArray): Response {
  const repo = repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  const meta = ctx.store.meta;
  const events = meta.tagHistory(repo, tag);
  const current = meta.resolveTag(repo, tag);
  if (events.length === 0 && current === null) throw new OciError(404, 'MANIFEST_UNKNOWN', `tag ${repo}:${tag} has no history`, { tag });
  return json(200, {
    repository: repo,
    tag,
    current,
    events: events.map((e) => ({ time: iso(e.atMs), old: e.oldDigest, new: e.newDigest, source: e.source })),
  });
}

/**
 * POST /snapyard/v1/<name>/_tags/<tag>/_rollback {"steps": N} | {"to": digest}:
 * move the tag N versions back (default 1; versions as tag-versions.ts
 * defines them), or to a given manifest; recorded with source "rollback".
 */
async function rollback(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = repoOf(ctx, m[1]!);
  const tag = checkTag(m[2]!);
  const body = await readBody(ctx, rollbackRequest);
  if (body.to !== undefined && body.steps !== undefined) throw new OciError(400, 'UNSUPPORTED', 'give "steps" or "to", not both');
  const meta = ctx.store.meta;
  const out = meta.relievingTx(() => {
    const current = tagTarget(ctx, repo, tag);
    let target: Digest;
    let steps: number | null = null;
    if (body.to !== undefined) {
      target = existingManifest(ctx, repo, body.to, `rollback target of ${repo}:${tag}: `);
    } else {
      steps = body.steps ?? 1;
      if (steps < 1) throw new OciError(400, 'UNSUPPORTED', 'steps must be at least 1');
      const versions = tagVersions(meta.tagHistory(repo, tag));
      const earlier = versions.length - 1;
      if (steps > earlier) {
        throw new OciError(409, 'DENIED', `${repo}:${tag} has ${earlier} earlier version${earlier === 1 ? '' : 's'}, cannot go ${steps} back`, { versions: earlier });
      }
      target = versions[versions.length - 1 - steps]!;
      existingManifest(ctx, repo, target, `rollback target of ${repo}:${tag} (${steps} back): `);
    }
    if (target === current) throw new OciError(409, 'DENIED', `${repo}:${tag} already points at ${target}`);
    meta.setTag(repo, tag, target, SOURCE.rollback);
    return { repository: repo, tag, old: current, new: target, steps };
  });
  return json(200, out);
}

export const tagRoutes: AdminRoute[] = [
  { name: 'admin.tag.history', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}/_history$`), needs: repo('pull'), bodyLimit: 0, handle: history },
  { name: 'admin.tag.rollback', method: 'POST', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}/_rollback$`), needs: repo('pull', 'push'), bodyLimit: JSON_BODY, handle: rollback },
  { name: 'admin.tag.put', method: 'PUT', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}$`), needs: repo('pull', 'push'), bodyLimit: JSON_BODY, handle: putTag },
  { name: 'admin.tag.delete', method: 'DELETE', pattern: new RegExp(`^/snapyard/v1/${NAME}/_tags/${TAG}$`), needs: repo('delete'), bodyLimit: JSON_BODY, handle: deleteTag },
];

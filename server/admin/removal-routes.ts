/**
 * Removal through the admin API: a manifest by digest (`snapyard rm
 * repo@digest`) and retention (`snapyard prune`); the rules are
 * storage/meta/lifecycle.ts. Only metadata is unlinked: a manifest no tag
 * points to, and its blobs and chunks, are left to gc.
 */
import { JSON_BODY, repo } from '../route-table.js';
import type { RequestContext } from '../context.js';
import type { AdminRoute } from './types.js';
import { json, NAME, readBody, repoOf } from './http.js';
import { pruneRequest } from '../../storage/protocol/api.js';
import type { PruneResult } from '../../storage/meta/lifecycle.js';

/**
 * DELETE /snapyard/v1/<name>/_manifests/<digest>: the manifest and every tag
 * pointing at it (each recorded). 409 DENIED when another manifest depends
 * on it (its subject, an index entry, or its base blob).
 */
async function deleteManifest(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  return json(200, await ctx.store.meta.removeManifest(await repoOf(ctx, m[1]!), m[2]!));
}

export type { PruneResult };

/** POST /snapyard/v1/<name>/_prune {"keep": N, "match": GLOB, "dryRun": bool}: storage/meta/lifecycle.ts prune. */
async function pruneRoute(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const body = await readBody(ctx, pruneRequest);
  return json(200, await ctx.store.meta.prune(repo, { keep: body.keep, match: body.match ?? null, dryRun: body.dryRun === true }));
}

export const removalRoutes: AdminRoute[] = [
  { name: 'admin.manifest.delete', method: 'DELETE', pattern: new RegExp(`^/snapyard/v1/${NAME}/_manifests/([^/]+)$`), needs: repo('delete'), bodyLimit: JSON_BODY, handle: deleteManifest },
  { name: 'admin.prune', method: 'POST', pattern: new RegExp(`^/snapyard/v1/${NAME}/_prune$`), needs: repo('delete'), bodyLimit: JSON_BODY, handle: pruneRoute },
];

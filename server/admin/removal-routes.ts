/**
 * Removal through the admin API: a manifest by digest (`snapyard rm
 * repo@digest`) and retention (`snapyard prune`). Only metadata is unlinked:
 * a manifest no tag points to, and its blobs and chunks, are left to gc.
 */
import { JSON_BODY, repo } from '../route-table.js';
import type { RequestContext } from '../context.js';
import { OciError } from '../oci-error.js';
import type { Digest } from '../../storage/digest.js';
import type { TagRow } from '../../storage/meta/metadata.js';
import type { AdminRoute } from './types.js';
import { existingManifest, json, NAME, readBody, repoOf } from './http.js';
import { pruneRequest } from '../../storage/protocol/api.js';
import { Dependencies } from './dependencies.js';
import { globToRegExp } from './glob.js';
import { SOURCE } from './tag-versions.js';

/**
 * DELETE /snapyard/v1/<name>/_manifests/<digest>: the manifest and every tag
 * pointing at it (each recorded). 409 DENIED when another manifest depends
 * on it (its subject, an index entry, or its base blob).
 */
function deleteManifest(ctx: RequestContext, m: RegExpExecArray): Response {
  const repo = repoOf(ctx, m[1]!);
  const meta = ctx.store.meta;
  const out = meta.relievingTx(() => {
    const digest = existingManifest(ctx, repo, m[2]!);
    const dependents = new Dependencies(meta.listManifests(repo)).dependents(digest);
    if (dependents.length > 0) {
      throw new OciError(409, 'DENIED', `${repo}@${digest} is the base of ${dependents.join(', ')}: remove those first`, { dependents });
    }
    const tags = meta.tagsOf(repo, digest);
    meta.deleteManifest(repo, digest, SOURCE.rm);
    return { repository: repo, digest, removedTags: tags };
  });
  return json(200, out);
}

export interface PruneResult {
  repository: string;
  keep: number;
  match: string | null;
  dryRun: boolean;
  /** Matching tags that stay: the newest `keep`, and those whose snapshot a kept snapshot depends on. */
  kept: Array<{ tag: string; digest: Digest; reason: 'newest' | 'base' }>;
  removedTags: Array<{ tag: string; digest: Digest }>;
  removedManifests: Digest[];
}

/**
 * POST /snapyard/v1/<name>/_prune {"keep": N, "match": GLOB, "dryRun": bool}:
 * keeps the newest N tags matching GLOB (default every tag; newest = most
 * recently moved) and removes the other matching tags, except those whose
 * snapshot a kept snapshot depends on (kept as "base"). A removed tag's
 * manifest is removed too unless a remaining tag points at it or a kept
 * snapshot depends on it. Tags that do not match are kept and protect
 * their snapshots' dependencies the same way.
 */
async function prune(ctx: RequestContext, m: RegExpExecArray): Promise<Response> {
  const repo = repoOf(ctx, m[1]!);
  const body = await readBody(ctx, pruneRequest);
  const keep = body.keep;
  const match = body.match ?? null;
  const re = match === null ? null : globToRegExp(match);
  const dryRun = body.dryRun === true;
  const meta = ctx.store.meta;
  const result = meta.relievingTx((): PruneResult => {
    const tags = meta.tagRows(repo);
    const matching = tags.filter((t) => !re || re.test(t.tag)).sort(newestFirst);
    const newest = new Set(matching.slice(0, keep));
    const kept = tags.filter((t) => !matching.includes(t) || newest.has(t));
    const needed = new Dependencies(meta.listManifests(repo)).closure(kept.map((t) => t.digest));
    const out: PruneResult = { repository: repo, keep, match, dryRun, kept: [], removedTags: [], removedManifests: [] };
    for (const t of matching) {
      if (newest.has(t)) out.kept.push({ tag: t.tag, digest: t.digest, reason: 'newest' });
      else if (needed.has(t.digest) && !kept.some((k) => k.digest === t.digest)) out.kept.push({ tag: t.tag, digest: t.digest, reason: 'base' });
      else out.removedTags.push({ tag: t.tag, digest: t.digest });
    }
    out.removedManifests = [...new Set(out.removedTags.map((t) => t.digest))].filter((d) => !needed.has(d));
    if (!dryRun) {
      for (const t of out.removedTags) meta.setTag(repo, t.tag, null, SOURCE.prune);
      for (const d of out.removedManifests) meta.deleteManifest(repo, d, SOURCE.prune);
    }
    return out;
  });
  return json(200, result);
}

function newestFirst(a: TagRow, b: TagRow): number {
  return b.updatedMs - a.updatedMs || b.seq - a.seq;
}

export const removalRoutes: AdminRoute[] = [
  { name: 'admin.manifest.delete', method: 'DELETE', pattern: new RegExp(`^/snapyard/v1/${NAME}/_manifests/([^/]+)$`), needs: repo('delete'), bodyLimit: JSON_BODY, handle: deleteManifest },
  { name: 'admin.prune', method: 'POST', pattern: new RegExp(`^/snapyard/v1/${NAME}/_prune$`), needs: repo('delete'), bodyLimit: JSON_BODY, handle: prune },
];

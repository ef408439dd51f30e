/**
 * The lifecycle rules of snapshots, one place for the admin API, the CLI, a
 * web page or a scheduled job: point a tag at a snapshot, remove a tag, roll
 * a tag back, remove a snapshot, prune a repository. The metadata store runs
 * each inside one transaction of its own (the `tx` given here) and records
 * every tag move with its source (SOURCE).
 *
 * Refusals are SnapyardErrors: MANIFEST_UNKNOWN (a tag or manifest that does
 * not exist), DENIED (a rule says no), INVALID_ARGUMENT (a bad request).
 * Only metadata changes: data of removed snapshots is left to gc.
 */
import { parseDigest, type Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';
import { Dependencies } from './dependencies.js';
import { globToRegExp } from './glob.js';
import type { LifecycleTx } from './metadata-store.js';
import type { TagRow } from './metadata-types.js';
import { SOURCE, tagVersions } from './tag-versions.js';

export { SOURCE };

async function tagTarget(tx: LifecycleTx, repo: string, tag: string): Promise<Digest> {
  const d = await tx.resolveTag(repo, tag);
  if (!d) throw new SnapyardError('MANIFEST_UNKNOWN', `tag ${repo}:${tag} does not exist`, { detail: { tag } });
  return d;
}

/** A manifest digest that must exist in `repo` (`why` prefixes the message). */
async function existingManifest(tx: LifecycleTx, repo: string, digest: string, why = ''): Promise<Digest> {
  const d = parseDigest(digest);
  if (!(await tx.manifestExists(repo, d))) {
    throw new SnapyardError('MANIFEST_UNKNOWN', `${why}manifest ${d} is not in ${repo} (deleted?)`, { detail: { digest: d } });
  }
  return d;
}

export interface TagMove {
  repository: string;
  tag: string;
  old: Digest | null;
  new: Digest;
}

/** Points `tag` at a manifest given by digest, or at what another tag points to. */
export async function moveTag(tx: LifecycleTx, repo: string, tag: string, target: { digest: string } | { tag: string }): Promise<TagMove> {
  const to = 'digest' in target ? await existingManifest(tx, repo, target.digest) : await tagTarget(tx, repo, target.tag);
  const old = await tx.resolveTag(repo, tag);
  await tx.setTag(repo, tag, to, SOURCE.tag);
  return { repository: repo, tag, old, new: to };
}

/** Removes a tag (its manifest stays); returns what it pointed at. */
export async function removeTag(tx: LifecycleTx, repo: string, tag: string): Promise<Digest> {
  const d = await tagTarget(tx, repo, tag);
  await tx.setTag(repo, tag, null, SOURCE.rm);
  return d;
}

export interface Rollback extends TagMove {
  /** Versions gone back (null for a rollback `to` a given manifest). */
  steps: number | null;
}

/**
 * Moves a tag `steps` versions back (default 1; versions as tag-versions.ts
 * defines them), or `to` a given manifest; recorded with source "rollback".
 */
export async function rollbackTag(tx: LifecycleTx, repo: string, tag: string, how: { steps?: number; to?: string }): Promise<Rollback> {
  if (how.to !== undefined && how.steps !== undefined) throw new SnapyardError('INVALID_ARGUMENT', 'give "steps" or "to", not both');
  const current = await tagTarget(tx, repo, tag);
  let target: Digest;
  let steps: number | null = null;
  if (how.to !== undefined) {
    target = await existingManifest(tx, repo, how.to, `rollback target of ${repo}:${tag}: `);
  } else {
    steps = how.steps ?? 1;
    if (steps < 1) throw new SnapyardError('INVALID_ARGUMENT', 'steps must be at least 1');
    const versions = tagVersions(await tx.tagHistory(repo, tag));
    const earlier = versions.length - 1;
    if (steps > earlier) {
      throw new SnapyardError('DENIED', `${repo}:${tag} has ${earlier} earlier version${earlier === 1 ? '' : 's'}, cannot go ${steps} back`, { detail: { versions: earlier } });
    }
    target = versions[versions.length - 1 - steps]!;
    await existingManifest(tx, repo, target, `rollback target of ${repo}:${tag} (${steps} back): `);
  }
  if (target === current) throw new SnapyardError('DENIED', `${repo}:${tag} already points at ${target}`);
  await tx.setTag(repo, tag, target, SOURCE.rollback);
  return { repository: repo, tag, old: current, new: target, steps };
}

/** Removes a manifest and every tag pointing at it; DENIED while another snapshot depends on it. */
export async function removeManifest(tx: LifecycleTx, repo: string, digest: string): Promise<{ repository: string; digest: Digest; removedTags: string[] }> {
  const d = await existingManifest(tx, repo, digest);
  const dependents = new Dependencies(await tx.listManifests(repo)).dependents(d);
  if (dependents.length > 0) {
    throw new SnapyardError('DENIED', `${repo}@${d} is the base of ${dependents.join(', ')}: remove those first`, { detail: { dependents } });
  }
  const tags = await tx.tagsOf(repo, d);
  await tx.deleteManifest(repo, d, SOURCE.rm);
  return { repository: repo, digest: d, removedTags: tags };
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
 * Keeps the newest `keep` tags matching `match` (a glob; default every tag;
 * newest = most recently moved) and removes the other matching tags, except
 * those whose snapshot a kept snapshot depends on (kept as "base"). A removed
 * tag's manifest is removed too unless a remaining tag points at it or a kept
 * snapshot depends on it. Tags that do not match are kept and protect their
 * snapshots' dependencies the same way.
 */
export async function prune(tx: LifecycleTx, repo: string, opts: { keep: number; match?: string | null; dryRun?: boolean }): Promise<PruneResult> {
  const match = opts.match ?? null;
  const re = match === null ? null : globToRegExp(match);
  const dryRun = opts.dryRun === true;
  const tags = await tx.tagRows(repo);
  const matching = tags.filter((t) => !re || re.test(t.tag)).sort(newestFirst);
  const newest = new Set(matching.slice(0, opts.keep));
  const kept = tags.filter((t) => !matching.includes(t) || newest.has(t));
  const needed = new Dependencies(await tx.listManifests(repo)).closure(kept.map((t) => t.digest));
  const out: PruneResult = { repository: repo, keep: opts.keep, match, dryRun, kept: [], removedTags: [], removedManifests: [] };
  for (const t of matching) {
    if (newest.has(t)) out.kept.push({ tag: t.tag, digest: t.digest, reason: 'newest' });
    else if (needed.has(t.digest) && !kept.some((k) => k.digest === t.digest)) out.kept.push({ tag: t.tag, digest: t.digest, reason: 'base' });
    else out.removedTags.push({ tag: t.tag, digest: t.digest });
  }
  out.removedManifests = [...new Set(out.removedTags.map((t) => t.digest))].filter((d) => !needed.has(d));
  if (!dryRun) {
    for (const t of out.removedTags) await tx.setTag(repo, t.tag, null, SOURCE.prune);
    for (const d of out.removedManifests) await tx.deleteManifest(repo, d, SOURCE.prune);
  }
  return out;
}

function newestFirst(a: TagRow, b: TagRow): number {
  return b.updatedMs - a.updatedMs || b.seq - a.seq;
}

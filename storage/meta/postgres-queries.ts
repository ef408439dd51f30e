/**
 * Statements of the PostgreSQL metadata store that run both on their own and
 * inside a lifecycle transaction (postgres-metadata-store.ts): tag reads and
 * moves, manifest listings and removal. Each takes the Query to run on (the
 * pool, or a transaction's client). Results match metadata.ts's (SQLite)
 * field for field and in order.
 */
import type { Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';
import type { LifecycleTx } from './metadata-store.js';
import { toSummary, SUMMARY } from './metadata-rows.js';
import type { ManifestSummary, TagEvent, TagRow } from './metadata-types.js';
import type { Query } from './postgres-db.js';

/** Manifest rows as records: the same columns as SQLite's (metadata.ts), int8 parsed to numbers (postgres-db.ts). */
export { annotationsOf, SUMMARY, toManifest, toSummary } from './metadata-rows.js';

export async function resolveTag(q: Query, repo: string, tag: string): Promise<Digest | null> {
  const r = await q('SELECT digest FROM tags WHERE repo = $1 AND tag = $2', [repo, tag]);
  return (r.rows[0]?.digest as Digest | undefined) ?? null;
}

export async function manifestExists(q: Query, repo: string, digest: Digest): Promise<boolean> {
  return ((await q('SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2', [repo, digest])).rowCount ?? 0) > 0;
}

/**
 * Points a tag at a manifest (or removes it with null) and records the move;
 * nothing when it already points there. Runs under the repository's lock
 * (the old digest read here is the one replaced). NOT_FOUND when the
 * manifest is not in the repository.
 */
export async function moveTag(q: Query, repo: string, tag: string, digest: Digest | null, source: string, t: number): Promise<void> {
  const old = await resolveTag(q, repo, tag);
  if (old === digest) return;
  if (digest === null) {
    await q(`WITH gone AS (DELETE FROM tags WHERE repo = $1 AND tag = $2)
             INSERT INTO tag_events (repo, tag, old_digest, new_digest, at_ms, source) VALUES ($1, $2, $3, NULL, $4, $5)`, [repo, tag, old, t, source]);
    return;
  }
  // One statement: the tag moves only if the manifest is there, and the event is written only if it moved.
  const r = await q(`WITH target AS (SELECT digest FROM manifests WHERE repo = $1 AND digest = $4),
      moved AS (INSERT INTO tags (repo, tag, digest, updated_ms) SELECT $1, $2, digest, $5 FROM target
                ON CONFLICT (repo, tag) DO UPDATE SET digest = excluded.digest, updated_ms = excluded.updated_ms RETURNING 1)
    INSERT INTO tag_events (repo, tag, old_digest, new_digest, at_ms, source) SELECT $1, $2, $3, $4, $5, $6 FROM moved`, [repo, tag, old, digest, t, source]);
  if ((r.rowCount ?? 0) === 0) throw new SnapyardError('NOT_FOUND', `manifest ${digest} is not in ${repo}`);
}

/** Deletes a manifest, its references and every tag pointing at it (each move recorded, in tag order). */
export async function deleteManifest(q: Query, repo: string, digest: Digest, source: string, t: number): Promise<boolean> {
  const r = await q(`WITH gone AS (DELETE FROM tags WHERE repo = $1 AND digest = $2 RETURNING tag),
      events AS (INSERT INTO tag_events (repo, tag, old_digest, new_digest, at_ms, source) SELECT $1, tag, $2, NULL, $3, $4 FROM gone ORDER BY tag),
      refs AS (DELETE FROM manifest_refs WHERE repo = $1 AND manifest = $2)
    DELETE FROM manifests WHERE repo = $1 AND digest = $2`, [repo, digest, t, source]);
  return (r.rowCount ?? 0) > 0;
}

export async function tagsOf(q: Query, repo: string, digest: Digest): Promise<string[]> {
  return (await q('SELECT tag FROM tags WHERE repo = $1 AND digest = $2 ORDER BY tag', [repo, digest])).rows.map((r) => r.tag as string);
}

/** Every move of a tag, newest first. */
export async function tagHistory(q: Query, repo: string, tag: string): Promise<TagEvent[]> {
  const r = await q(`SELECT tag, old_digest AS "oldDigest", new_digest AS "newDigest", at_ms AS "atMs", source FROM tag_events
                     WHERE repo = $1 AND tag = $2 ORDER BY id DESC`, [repo, tag]);
  return r.rows as TagEvent[];
}

export async function tagRows(q: Query, repo: string): Promise<TagRow[]> {
  const r = await q(`SELECT t.tag, t.digest, t.updated_ms AS "updatedMs",
      COALESCE((SELECT MAX(e.id) FROM tag_events e WHERE e.repo = t.repo AND e.tag = t.tag), 0) AS seq
    FROM tags t WHERE t.repo = $1 ORDER BY t.tag`, [repo]);
  return r.rows as TagRow[];
}

/** Every manifest of a repository, newest first, with the child manifests it lists (one round trip). */
export async function listManifests(q: Query, repo: string): Promise<ManifestSummary[]> {
  const r = await q(`SELECT ${SUMMARY}, ARRAY(SELECT c.ref FROM manifest_refs c WHERE c.repo = m.repo AND c.manifest = m.digest AND c.kind = 'manifest' ORDER BY c.ref) AS children
    FROM manifests m WHERE m.repo = $1 ORDER BY m.created_ms DESC, m.digest`, [repo]);
  return r.rows.map((row) => toSummary(row, row.children as Digest[]));
}

/** The LifecycleTx of one transaction (its Query), with its time. */
export function lifecycleView(q: Query, now: () => number): LifecycleTx {
  return {
    resolveTag: (repo, tag) => resolveTag(q, repo, tag),
    manifestExists: (repo, digest) => manifestExists(q, repo, digest),
    setTag: (repo, tag, digest, source) => moveTag(q, repo, tag, digest, source, now()),
    tagHistory: (repo, tag) => tagHistory(q, repo, tag),
    tagRows: (repo) => tagRows(q, repo),
    tagsOf: (repo, digest) => tagsOf(q, repo, digest),
    listManifests: (repo) => listManifests(q, repo),
    deleteManifest: (repo, digest, source) => deleteManifest(q, repo, digest, source, now()),
  };
}

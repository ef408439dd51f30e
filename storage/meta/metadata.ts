import { openSharedSqlite } from '../sqlite-open.js';
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { migrate } from './metadata-schema.js';
import { DigestAliases } from './digest-aliases.js';
import { isDiskFull, SnapyardError } from '../errors.js';
import type { Digest } from '../digest.js';
import { manifestFacts } from './manifest-facts.js';

import { annotationsOf, SUMMARY, toManifest, toSummary } from './metadata-rows.js';
import type { BlobRecord, ManifestRecord, ManifestSummary, ManifestRef, NewManifest, TagEvent, TagRow, RepoSummary, UploadRecord } from './metadata-types.js';

export type { BlobRecord, ManifestRecord, ManifestSummary, ManifestRef, NewManifest, TagEvent, TagRow, RepoSummary, UploadRecord };

/**
 * Registry metadata in SQLite (WAL, versioned schema: metadata-schema.ts).
 * Statements are prepared once; every commit is one transaction.
 */
export class Metadata {
  private readonly db: Database.Database;
  private readonly s;
  readonly now: () => number;
  /** sha512 (and other) names of stored blobs and manifests (digest-aliases.ts). */
  readonly aliases: DigestAliases;

  /** Called when a deletion hits a full disk: frees reserved space (disk-reserve.ts); true if it freed some. */
  private readonly onFull: () => boolean;

  constructor(path: string, opts: { now?: () => number; onFull?: () => boolean } = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = openSharedSqlite(path); // other processes may open the store at once
    this.db.pragma('foreign_keys = ON');
    migrate(this.db);
    this.aliases = new DigestAliases(this.db);
    this.now = opts.now ?? Date.now;
    this.onFull = opts.onFull ?? (() => false);
    const p = (sql: string) => this.db.prepare(sql);
    this.s = {
      ensureRepo: p('INSERT OR IGNORE INTO repositories (name, created_ms) VALUES (?, ?)'),
      repoExists: p('SELECT 1 FROM repositories WHERE name = ?').pluck(),
      listRepos: p('SELECT name FROM repositories ORDER BY name').pluck(),
      getBlob: p('SELECT digest, size, index_digest AS indexDigest FROM blobs WHERE digest = ?'),
      putBlob: p('INSERT OR IGNORE INTO blobs (digest, size, index_digest, created_ms) VALUES (?, ?, ?, ?)'),
      // A re-link refreshes the time: GC keeps a blob linked but not yet referenced for its grace period from then.
      linkBlob: p('INSERT INTO repo_blobs (repo, digest, created_ms) VALUES (?, ?, ?) ON CONFLICT (repo, digest) DO UPDATE SET created_ms = excluded.created_ms'),
      isLinked: p('SELECT 1 FROM repo_blobs WHERE repo = ? AND digest = ?').pluck(),
      unlinkBlob: p('DELETE FROM repo_blobs WHERE repo = ? AND digest = ?'),
      getManifest: p('SELECT * FROM manifests WHERE repo = ? AND digest = ?'),
      putManifest: p(`INSERT OR REPLACE INTO manifests (repo, digest, media_type, artifact_type, subject, annotations, size, content, created_ms, image_blob, base_blob, backing_file)
                      VALUES (?, ?, ?, ?, ?, ?, ?, ?, COALESCE((SELECT created_ms FROM manifests WHERE repo = ? AND digest = ?), ?), ?, ?, ?)`),
      deleteManifest: p('DELETE FROM manifests WHERE repo = ? AND digest = ?'),
      putRef: p('INSERT OR IGNORE INTO manifest_refs (repo, manifest, ref, kind) VALUES (?, ?, ?, ?)'),
      deleteRefs: p('DELETE FROM manifest_refs WHERE repo = ? AND manifest = ?'),
      manifestExists: p('SELECT 1 FROM manifests WHERE repo = ? AND digest = ?').pluck(),
      referrers: p(`SELECT ${SUMMARY}, annotations FROM manifests WHERE repo = ? AND subject = ? ORDER BY created_ms, digest`),
      referencing: p(`SELECT ${SUMMARY.replace(/(^|, )/g, '$1m.')} FROM manifest_refs r JOIN manifests m ON m.repo = r.repo AND m.digest = r.manifest
                      WHERE r.repo = ? AND r.ref = ? ORDER BY m.created_ms DESC, m.digest`),
      childRefs: p(`SELECT manifest, ref FROM manifest_refs WHERE repo = ? AND kind = 'manifest' ORDER BY manifest, ref`).raw(),
      getTag: p('SELECT digest FROM tags WHERE repo = ? AND tag = ?').pluck(),
      setTag: p('INSERT OR REPLACE INTO tags (repo, tag, digest, updated_ms) VALUES (?, ?, ?, ?)'),
      deleteTag: p('DELETE FROM tags WHERE repo = ? AND tag = ?'),
      tagsOf: p('SELECT tag FROM tags WHERE repo = ? AND digest = ? ORDER BY tag').pluck(),
      listTags: p('SELECT tag FROM tags WHERE repo = ? AND tag > ? ORDER BY tag LIMIT ?').pluck(),
      addEvent: p('INSERT INTO tag_events (repo, tag, old_digest, new_digest, at_ms, source) VALUES (?, ?, ?, ?, ?, ?)'),
      events: p(`SELECT tag, old_digest AS oldDigest, new_digest AS newDigest, at_ms AS atMs, source FROM tag_events
                 WHERE repo = ? AND tag = ? ORDER BY id DESC`),
      tagRows: p(`SELECT t.tag, t.digest, t.updated_ms AS updatedMs,
                    COALESCE((SELECT MAX(e.id) FROM tag_events e WHERE e.repo = t.repo AND e.tag = t.tag), 0) AS seq
                  FROM tags t WHERE t.repo = ? ORDER BY t.tag`),
      manifestsOf: p(`SELECT ${SUMMARY} FROM manifests WHERE repo = ? ORDER BY created_ms DESC, digest`),
      repoSummaries: p(`SELECT r.name, r.created_ms AS createdMs,
                          (SELECT COUNT(*) FROM manifests m WHERE m.repo = r.name) AS manifests,
                          (SELECT COUNT(*) FROM tags t WHERE t.repo = r.name) AS tags
                        FROM repositories r ORDER BY r.name`),
      createUpload: p('INSERT INTO uploads (id, repo, size, created_ms, updated_ms) VALUES (?, ?, 0, ?, ?)'),
      getUpload: p('SELECT id, repo, size, created_ms AS createdMs, updated_ms AS updatedMs FROM uploads WHERE id = ?'),
      setUploadSize: p('UPDATE uploads SET size = ?, updated_ms = ? WHERE id = ?'),
      deleteUpload: p('DELETE FROM uploads WHERE id = ?'),
      clearUploads: p('DELETE FROM uploads'),
    };
  }

  /** Blobs stored and the sum of their sizes (the logical bytes the chunks stand for). */
  blobTotals(): { blobs: number; bytes: number } {
    const r = this.db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM blobs').get() as { n: number; bytes: number };
    return { blobs: r.n, bytes: r.bytes };
  }

  /** Readiness: the database answers and takes a write lock (a write transaction that writes nothing). Throws otherwise. */
  probe(): void {
    this.db.prepare('SELECT 1').get();
    this.db.exec('BEGIN IMMEDIATE; ROLLBACK');
  }

  close(): void {
    this.db.close();
  }

  /** Runs fn in one transaction. */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  /**
   * An async function in one IMMEDIATE transaction, retried once on a full
   * disk as relievingTx is. The caller keeps every other use of this
   * connection out until it settles (sqlite-metadata-store.ts): whatever ran
   * on the connection meanwhile would be part of the transaction.
   */
  async relievingAsyncTx<T>(fn: () => Promise<T>): Promise<T> {
    const once = async (): Promise<T> => {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        const r = await fn();
        this.db.exec('COMMIT');
        return r;
      } catch (e) {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
        throw e;
      }
    };
    try {
      return await once();
    } catch (e) {
      if (!isDiskFull(e) || !this.onFull()) throw e;
      return once();
    }
  }

  /**
   * A transaction that deletes or moves (rm, prune, tag moves, unlinks, gc):
   * on a full disk the reserve is released and it runs once more, so the
   * registry can always be relieved through the API. Inside another
   * transaction it is part of that one (whose owner retries).
   */
  relievingTx<T>(fn: () => T): T {
    if (this.db.inTransaction) return this.tx(fn);
    try {
      return this.tx(fn);
    } catch (e) {
      if (!isDiskFull(e) || !this.onFull()) throw e;
      return this.tx(fn);
    }
  }

  repoExists(repo: string): boolean {
    return this.s.repoExists.get(repo) !== undefined;
  }

  listRepos(): string[] {
    return this.s.listRepos.all() as string[];
  }

  getBlob(digest: Digest): BlobRecord | null {
    return (this.s.getBlob.get(digest) as BlobRecord | undefined) ?? null;
  }

  /** Records a blob (idempotent) and links it into a repository, in one transaction. */
  commitBlob(repo: string, blob: BlobRecord): void {
    const t = this.now();
    this.tx(() => {
      this.s.ensureRepo.run(repo, t);
      this.s.putBlob.run(blob.digest, blob.size, blob.indexDigest, t);
      this.s.linkBlob.run(repo, blob.digest, t);
    });
  }

  /** Links an already known blob into a repository; false when the blob is unknown. */
  linkBlob(repo: string, digest: Digest): boolean {
    const t = this.now();
    return this.tx(() => {
      if (!this.s.getBlob.get(digest)) return false;
      this.s.ensureRepo.run(repo, t);
      this.s.linkBlob.run(repo, digest, t);
      return true;
    });
  }

  isLinked(repo: string, digest: Digest): boolean {
    return this.s.isLinked.get(repo, digest) !== undefined;
  }

  unlinkBlob(repo: string, digest: Digest): boolean {
    return this.relievingTx(() => this.s.unlinkBlob.run(repo, digest).changes > 0);
  }

  /**
   * Unlinks a blob from a repository unless a manifest of the repository
   * references it (one transaction: a manifest PUT cannot slip in between);
   * `usedBy` names up to 20 such manifests when it is refused.
   */
  unlinkBlobIfUnused(repo: string, digest: Digest): { unlinked: boolean; usedBy: Digest[] } {
    return this.relievingTx(() => {
      const usedBy = this.db.prepare(`SELECT manifest FROM manifest_refs WHERE repo = ? AND ref = ? AND kind = 'blob' ORDER BY manifest LIMIT 20`).pluck().all(repo, digest) as Digest[];
      if (usedBy.length > 0) return { unlinked: false, usedBy };
      return { unlinked: this.s.unlinkBlob.run(repo, digest).changes > 0, usedBy };
    });
  }

  /**
   * References that do not resolve: a manifest's blob that is not linked into
   * its repository (or not recorded at all), or a child manifest that is gone.
   */
  danglingRefs(): Array<{ repo: string; manifest: Digest; ref: Digest; kind: 'blob' | 'manifest' }> {
    return this.db.prepare(`SELECT r.repo, r.manifest, r.ref, r.kind FROM manifest_refs r
      WHERE (r.kind = 'blob' AND NOT EXISTS (SELECT 1 FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = r.repo AND rb.digest = r.ref))
         OR (r.kind = 'manifest' AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo AND m.digest = r.ref))
      ORDER BY r.repo, r.manifest, r.ref`).all() as Array<{ repo: string; manifest: Digest; ref: Digest; kind: 'blob' | 'manifest' }>;
  }

  getManifest(repo: string, digest: Digest): ManifestRecord | null {
    const r = this.s.getManifest.get(repo, digest) as Record<string, unknown> | undefined;
    return r ? toManifest(r) : null;
  }

  manifestExists(repo: string, digest: Digest): boolean {
    return this.s.manifestExists.get(repo, digest) !== undefined;
  }

  /**
   * Stores a manifest and (optionally) points a tag at it, in one transaction
   * that first checks every referenced blob is linked into the repository and
   * every referenced manifest exists. Returns the refs that were missing
   * (nothing is written then).
   */
  commitManifest(m: NewManifest, source: string): { missing: ManifestRef[] } {
    const t = this.now();
    return this.tx(() => {
      const present = (r: ManifestRef) =>
        r.kind === 'blob' ? this.s.isLinked.get(m.repo, r.digest) !== undefined : this.s.manifestExists.get(m.repo, r.digest) !== undefined;
      const missing = m.refs.filter((r) => !r.optional && !present(r));
      if (missing.length > 0) return { missing };
      this.s.ensureRepo.run(m.repo, t);
      // An index (no blob refs) carries no image: its content need not be parsed again.
      const f = m.facts ?? (m.refs.some((r) => r.kind === 'blob') ? manifestFacts(m.content, m.annotations ?? {}) : { ...manifestFacts(Buffer.from('{}'), m.annotations ?? {}), imageBlob: null });
      this.s.putManifest.run(
        m.repo, m.digest, m.mediaType, m.artifactType, m.subject,
        m.annotations ? JSON.stringify(m.annotations) : null, m.content.byteLength, m.content, m.repo, m.digest, t,
        f.imageBlob, f.baseBlob, f.backingFile,
      );
      this.s.deleteRefs.run(m.repo, m.digest);
      for (const r of m.refs) if (!r.optional || present(r)) this.s.putRef.run(m.repo, m.digest, r.digest, r.kind);
      if (m.tag !== null) this.moveTag(m.repo, m.tag, m.digest, source, t);
      return { missing: [] };
    });
  }

  /** Deletes a manifest and every tag pointing at it (each recorded as a tag event). */
  deleteManifest(repo: string, digest: Digest, source: string): boolean {
    const t = this.now();
    return this.relievingTx(() => {
      for (const tag of this.s.tagsOf.all(repo, digest) as string[]) this.moveTag(repo, tag, null, source, t);
      this.s.deleteRefs.run(repo, digest);
      return this.s.deleteManifest.run(repo, digest).changes > 0;
    });
  }

  resolveTag(repo: string, tag: string): Digest | null {
    return (this.s.getTag.get(repo, tag) as Digest | undefined) ?? null;
  }

  /** Points a tag at a manifest (or removes it with null), recording the move. */
  setTag(repo: string, tag: string, digest: Digest | null, source: string): void {
    this.relievingTx(() => this.moveTag(repo, tag, digest, source, this.now()));
  }

  private moveTag(repo: string, tag: string, digest: Digest | null, source: string, t: number): void {
    const old = (this.s.getTag.get(repo, tag) as Digest | undefined) ?? null;
    if (old === digest) return;
    if (digest === null) this.s.deleteTag.run(repo, tag);
    else {
      if (this.s.manifestExists.get(repo, digest) === undefined) {
        throw new SnapyardError('NOT_FOUND', `manifest ${digest} is not in ${repo}`);
      }
      this.s.setTag.run(repo, tag, digest, t);
    }
    this.s.addEvent.run(repo, tag, old, digest, t, source);
  }

  /** Tags in lexical order after `last`, at most `n`. */
  listTags(repo: string, n: number, last: string): string[] {
    return this.s.listTags.all(repo, last, n) as string[];
  }

  tagsOf(repo: string, digest: Digest): string[] {
    return this.s.tagsOf.all(repo, digest) as string[];
  }

  tagHistory(repo: string, tag: string): TagEvent[] {
    return this.s.events.all(repo, tag) as TagEvent[];
  }

  /** Every tag of a repository with its digest and last move, in tag order. */
  tagRows(repo: string): TagRow[] {
    return this.s.tagRows.all(repo) as TagRow[];
  }

  /** Every manifest of a repository, newest first, as listings see them (no content is read or parsed). */
  listManifests(repo: string): ManifestSummary[] {
    const children = new Map<string, Digest[]>();
    for (const [m, ref] of this.s.childRefs.all(repo) as Array<[string, Digest]>) children.set(m, [...(children.get(m) ?? []), ref]);
    return (this.s.manifestsOf.all(repo) as Array<Record<string, unknown>>).map((r) => toSummary(r, children.get(r.digest as string) ?? []));
  }

  /** Every repository with its manifest and tag counts, by name. */
  repoSummaries(): RepoSummary[] {
    return this.s.repoSummaries.all() as RepoSummary[];
  }

  /** Manifests of `repo` that reference blob or manifest `digest`, newest first. */
  manifestsReferencing(repo: string, digest: Digest): ManifestSummary[] {
    return (this.s.referencing.all(repo, digest) as Array<Record<string, unknown>>).map((r) => toSummary(r, []));
  }

  /** Manifests of `repo` whose subject is `subject` (oldest first), with their annotations (the referrers API answers them). */
  referrers(repo: string, subject: Digest): Array<ManifestSummary & { annotations: Record<string, string> | null }> {
    return (this.s.referrers.all(repo, subject) as Record<string, unknown>[]).map((r) => ({ ...toSummary(r, []), annotations: annotationsOf(r) }));
  }

  createUpload(id: string, repo: string): void {
    const t = this.now();
    this.tx(() => {
      this.s.ensureRepo.run(repo, t);
      this.s.createUpload.run(id, repo, t, t);
    });
  }

  getUpload(id: string): UploadRecord | null {
    return (this.s.getUpload.get(id) as UploadRecord | undefined) ?? null;
  }

  setUploadSize(id: string, size: number): void {
    this.s.setUploadSize.run(size, this.now(), id);
  }

  deleteUpload(id: string): boolean {
    return this.s.deleteUpload.run(id).changes > 0;
  }

  clearUploads(): void {
    this.s.clearUploads.run();
  }

  // ---- GC and verify (storage/maintenance/gc.ts, storage/maintenance/verify.ts) ----

  /**
   * What GC keeps: blobs referenced by any manifest, and blobs linked into a
   * repository at or after `cutoffMs` (a push in progress links its blobs
   * before it puts the manifest that references them).
   */
  gcLiveBlobs(cutoffMs: number): Set<Digest> {
    const rows = this.db.prepare(`SELECT ref FROM manifest_refs WHERE kind = 'blob'
      UNION SELECT digest FROM repo_blobs WHERE created_ms >= ?`).pluck().all(cutoffMs) as Digest[];
    return new Set(rows);
  }

  /**
   * Unlinks blobs linked before `cutoffMs` that no manifest of their
   * repository references, then deletes the records of blobs linked nowhere
   * and referenced by no manifest; one transaction (dryRun: counts only).
   */
  gcBlobs(cutoffMs: number, dryRun: boolean): { unlinked: number; deleted: Digest[] } {
    const stale = `FROM repo_blobs WHERE repo_blobs.created_ms < ? AND NOT EXISTS
      (SELECT 1 FROM manifest_refs r WHERE r.repo = repo_blobs.repo AND r.ref = repo_blobs.digest)`;
    const orphans = `SELECT digest FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = b.digest)
      AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND (rb.created_ms >= ? OR EXISTS
        (SELECT 1 FROM manifest_refs r2 WHERE r2.repo = rb.repo AND r2.ref = rb.digest)))`;
    return this.relievingTx(() => {
      const deleted = this.db.prepare(orphans).pluck().all(cutoffMs) as Digest[];
      if (dryRun) return { unlinked: this.db.prepare(`SELECT COUNT(*) ${stale}`).pluck().get(cutoffMs) as number, deleted };
      const unlinked = this.db.prepare(`DELETE ${stale}`).run(cutoffMs).changes;
      const del = this.db.prepare('DELETE FROM blobs WHERE digest = ?');
      for (const d of deleted) del.run(d);
      return { unlinked, deleted };
    });
  }

  /** Every blob record. */
  allBlobs(): BlobRecord[] {
    return this.db.prepare('SELECT digest, size, index_digest AS indexDigest FROM blobs ORDER BY digest').all() as BlobRecord[];
  }

  /** Unlinks a blob from every repository (repair: clients then upload it again); returns the repositories. */
  unlinkEverywhere(digest: Digest): string[] {
    return this.relievingTx(() => {
      const repos = this.db.prepare('SELECT repo FROM repo_blobs WHERE digest = ?').pluck().all(digest) as string[];
      this.db.prepare('DELETE FROM repo_blobs WHERE digest = ?').run(digest);
      return repos;
    });
  }

  /**
   * The snapshots that use a blob, directly or through an index manifest:
   * `repo:tag` for each tag, `repo@digest` for an untagged manifest.
   */
  snapshotsUsing(blob: Digest): string[] {
    const refs = this.db.prepare('SELECT repo, manifest FROM manifest_refs WHERE ref = ?');
    const out = new Set<string>();
    const seen = new Set<string>();
    let todo = refs.all(blob) as Array<{ repo: string; manifest: string }>;
    while (todo.length > 0) {
      const next: typeof todo = [];
      for (const r of todo) {
        const key = `${r.repo}@${r.manifest}`;
        if (seen.has(key)) continue;
        seen.add(key);
        const tags = this.tagsOf(r.repo, r.manifest as Digest);
        if (tags.length === 0) out.add(key);
        for (const t of tags) out.add(`${r.repo}:${t}`);
        for (const p of refs.all(r.manifest) as typeof todo) if (p.repo === r.repo) next.push(p);
      }
      todo = next;
    }
    return [...out].sort();
  }
}

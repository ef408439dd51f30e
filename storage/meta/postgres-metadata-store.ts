/**
 * Registry metadata in PostgreSQL, for several replicas over one database
 * (schema: postgres-schema.ts; connection, locks and errors: postgres-db.ts).
 * The same answers as the SQLite store (sqlite-metadata-store.ts, the
 * reference): every method is one statement or one transaction, and the
 * lifecycle rules (lifecycle.ts) run inside one transaction under the
 * repository's advisory lock.
 *
 * Round trips: a blob commit is 3 (BEGIN + lock, one statement, COMMIT); a
 * manifest commit 4, or 6 when it moves a tag, however many references it
 * has (they go as arrays).
 *
 * Upload records carry their owner (this process: upload sessions live in
 * its memory) and its advertised URL, where other replicas forward them. `clearUploads()` at start removes this owner's records and
 * those idle past `uploadStaleMs` (expired wherever they were), never the
 * live sessions of other replicas.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { AnyDigest, Digest, Sha512Digest } from '../digest.js';
import * as lifecycle from './lifecycle.js';
import { manifestFacts, type ManifestFacts } from './manifest-facts.js';
import type { LifecycleTx, MetadataStore } from './metadata-store.js';
import type { BlobRecord, ManifestRef, ManifestSummary, NewManifest, RepoSummary, UploadRecord } from './metadata-types.js';
import { lockKey, PgDatabase, type PgOptions, type Query } from './postgres-db.js';
import * as sql from './postgres-queries.js';
import { PG_MIGRATIONS } from './postgres-schema.js';

export interface PostgresMetadataOptions extends PgOptions {
  now?: () => number;
  /** Upload records idle longer than this are removed by clearUploads (default 24 h; the server passes its upload TTL). */
  uploadStaleMs?: number;
  /** The owner recorded with this process's upload records (default HOST:PID:random). */
  owner?: string;
  /** Where other replicas reach this one (`serve --advertise-url`), recorded with its upload records. */
  ownerUrl?: string | null;
}

/** Opens (and migrates) the store at a postgres:// URL; STORE_UNAVAILABLE when the server does not answer. */
export async function openPostgresMetadata(url: string, opts: PostgresMetadataOptions = {}): Promise<PostgresMetadataStore> {
  const db = new PgDatabase(url, opts);
  try {
    const schema = await db.currentSchema();
    const now = opts.now ?? Date.now;
    await db.migrate({ table: 'snapyard_schema', lock: lockKey(schema, 'migrate'), steps: PG_MIGRATIONS, what: 'metadata schema', now: now() });
    return new PostgresMetadataStore(db, schema, opts);
  } catch (e) {
    await db.close().catch(() => {});
    throw e;
  }
}

/** Facts for listings, as metadata.ts works them out: an index (no blob refs) carries no image. */
function factsOf(m: NewManifest): ManifestFacts {
  if (m.facts) return m.facts;
  if (m.refs.some((r) => r.kind === 'blob')) return manifestFacts(m.content, m.annotations ?? {});
  return { ...manifestFacts(Buffer.from('{}'), m.annotations ?? {}), imageBlob: null };
}

export class PostgresMetadataStore implements MetadataStore {
  readonly location: string;
  readonly now: () => number;
  /** The owner of this process's upload records. */
  readonly owner: string;
  private readonly q: Query;
  private readonly gcShared: string;
  private readonly gcExclusive: string;
  private readonly uploadStaleMs: number;
  private readonly ownerUrl: string | null;

  constructor(readonly db: PgDatabase, readonly schema: string, opts: PostgresMetadataOptions) {
    this.location = db.location;
    this.now = opts.now ?? Date.now;
    this.owner = opts.owner ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.uploadStaleMs = opts.uploadStaleMs ?? 24 * 3600_000;
    this.ownerUrl = opts.ownerUrl ?? null;
    this.q = db.query;
    const gc = lockKey(schema, 'gc');
    this.gcShared = `pg_advisory_xact_lock_shared(${gc})`;
    this.gcExclusive = `pg_advisory_xact_lock(${gc})`;
  }

  /** Statements sent so far (one round trip each). */
  get roundTrips(): number {
    return this.db.roundTrips;
  }

  /** The locks of a transaction that changes `repo`: gc's shared, then the repository's. */
  private repoLocks(repo: string): string[] {
    return [this.gcShared, `pg_advisory_xact_lock(${lockKey(this.schema, `repo:${repo}`)})`];
  }

  private inRepo<T>(repo: string, fn: (q: Query) => Promise<T>): Promise<T> {
    return this.db.tx(this.repoLocks(repo), fn);
  }

  private lifecycle<T>(repo: string, fn: (tx: LifecycleTx) => Promise<T>): Promise<T> {
    return this.inRepo(repo, (q) => fn(sql.lifecycleView(q, this.now)));
  }

  async probe(): Promise<void> {
    // Answers, and takes a write lock (fails on a read-only standby); one round trip.
    await this.db.tx([], (q) => q('LOCK TABLE snapyard_schema IN ROW EXCLUSIVE MODE'));
  }

  close(): Promise<void> {
    return this.db.close();
  }

  // ---- repositories ----

  async repoExists(repo: string): Promise<boolean> {
    return ((await this.q('SELECT 1 FROM repositories WHERE name = $1', [repo])).rowCount ?? 0) > 0;
  }

  async listRepos(): Promise<string[]> {
    return (await this.q('SELECT name FROM repositories ORDER BY name')).rows.map((r) => r.name as string);
  }

  async repoSummaries(): Promise<RepoSummary[]> {
    return (await this.q(`SELECT r.name, r.created_ms AS "createdMs",
        (SELECT COUNT(*) FROM manifests m WHERE m.repo = r.name) AS manifests,
        (SELECT COUNT(*) FROM tags t WHERE t.repo = r.name) AS tags
      FROM repositories r ORDER BY r.name`)).rows as RepoSummary[];
  }

  // ---- blobs ----

  async blobTotals(): Promise<{ blobs: number; bytes: number }> {
    const r = (await this.q('SELECT COUNT(*) AS n, COALESCE(SUM(size), 0)::bigint AS bytes FROM blobs')).rows[0] as { n: number; bytes: number };
    return { blobs: r.n, bytes: r.bytes };
  }

  async getBlob(digest: Digest): Promise<BlobRecord | null> {
    const r = await this.q('SELECT digest, size, index_digest AS "indexDigest" FROM blobs WHERE digest = $1', [digest]);
    return (r.rows[0] as BlobRecord | undefined) ?? null;
  }

  async commitBlob(repo: string, blob: BlobRecord): Promise<void> {
    const t = this.now();
    await this.db.tx([this.gcShared], (q) =>
      q(`WITH r AS (INSERT INTO repositories (name, created_ms) VALUES ($1, $5) ON CONFLICT DO NOTHING),
           b AS (INSERT INTO blobs (digest, size, index_digest, created_ms) VALUES ($2, $3, $4, $5) ON CONFLICT DO NOTHING)
         INSERT INTO repo_blobs (repo, digest, created_ms) VALUES ($1, $2, $5)
         ON CONFLICT (repo, digest) DO UPDATE SET created_ms = excluded.created_ms`, [repo, blob.digest, blob.size, blob.indexDigest, t]),
    );
  }

  async linkBlob(repo: string, digest: Digest): Promise<boolean> {
    const t = this.now();
    const r = await this.db.tx([this.gcShared], (q) =>
      q(`WITH b AS (SELECT digest FROM blobs WHERE digest = $2),
           r AS (INSERT INTO repositories (name, created_ms) SELECT $1, $3 FROM b ON CONFLICT DO NOTHING)
         INSERT INTO repo_blobs (repo, digest, created_ms) SELECT $1, digest, $3 FROM b
         ON CONFLICT (repo, digest) DO UPDATE SET created_ms = excluded.created_ms`, [repo, digest, t]),
    );
    return (r.rowCount ?? 0) > 0;
  }

  async isLinked(repo: string, digest: Digest): Promise<boolean> {
    return ((await this.q('SELECT 1 FROM repo_blobs WHERE repo = $1 AND digest = $2', [repo, digest])).rowCount ?? 0) > 0;
  }

  async unlinkBlob(repo: string, digest: Digest): Promise<boolean> {
    return ((await this.q('DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2', [repo, digest])).rowCount ?? 0) > 0;
  }

  async unlinkBlobIfUnused(repo: string, digest: Digest): Promise<{ unlinked: boolean; usedBy: Digest[] }> {
    return this.inRepo(repo, async (q) => {
      const usedBy = (await q(`SELECT manifest FROM manifest_refs WHERE repo = $1 AND ref = $2 AND kind = 'blob' ORDER BY manifest LIMIT 20`, [repo, digest])).rows.map((r) => r.manifest as Digest);
      if (usedBy.length > 0) return { unlinked: false, usedBy };
      return { unlinked: ((await q('DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2', [repo, digest])).rowCount ?? 0) > 0, usedBy };
    });
  }

  async unlinkEverywhere(digest: Digest): Promise<string[]> {
    const r = await this.q('WITH d AS (DELETE FROM repo_blobs WHERE digest = $1 RETURNING repo) SELECT repo FROM d ORDER BY repo', [digest]);
    return r.rows.map((x) => x.repo as string);
  }

  async allBlobs(): Promise<BlobRecord[]> {
    return (await this.q('SELECT digest, size, index_digest AS "indexDigest" FROM blobs ORDER BY digest')).rows as BlobRecord[];
  }

  async snapshotsUsing(blob: Digest): Promise<string[]> {
    // The manifests using it, and (in their repository) those listing them, transitively; with their tags.
    const r = await this.q(`WITH RECURSIVE users(repo, manifest) AS (
        SELECT repo, manifest FROM manifest_refs WHERE ref = $1
        UNION SELECT p.repo, p.manifest FROM manifest_refs p JOIN users u ON p.repo = u.repo AND p.ref = u.manifest)
      SELECT u.repo, u.manifest, t.tag FROM users u LEFT JOIN tags t ON t.repo = u.repo AND t.digest = u.manifest`, [blob]);
    const out = new Set<string>();
    for (const x of r.rows) out.add(x.tag === null ? `${x.repo}@${x.manifest}` : `${x.repo}:${x.tag}`);
    return [...out].sort();
  }

  async danglingRefs(): Promise<Array<{ repo: string; manifest: Digest; ref: Digest; kind: 'blob' | 'manifest' }>> {
    return (await this.q(`SELECT r.repo, r.manifest, r.ref, r.kind FROM manifest_refs r
      WHERE (r.kind = 'blob' AND NOT EXISTS (SELECT 1 FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repo = r.repo AND rb.digest = r.ref))
         OR (r.kind = 'manifest' AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.repo AND m.digest = r.ref))
      ORDER BY r.repo, r.manifest, r.ref`)).rows as Array<{ repo: string; manifest: Digest; ref: Digest; kind: 'blob' | 'manifest' }>;
  }

  // ---- manifests ----

  async getManifest(repo: string, digest: Digest) {
    const r = await this.q('SELECT * FROM manifests WHERE repo = $1 AND digest = $2', [repo, digest]);
    return r.rows[0] ? sql.toManifest(r.rows[0]) : null;
  }

  manifestExists(repo: string, digest: Digest): Promise<boolean> {
    return sql.manifestExists(this.q, repo, digest);
  }

  async commitManifest(m: NewManifest, source: string): Promise<{ missing: ManifestRef[] }> {
    const t = this.now();
    const f = factsOf(m);
    return this.inRepo(m.repo, async (q) => {
      // Which refs are absent, all in one statement (1-based positions in m.refs).
      const absent = new Set<number>();
      if (m.refs.length > 0) {
        const r = await q(`SELECT x.i FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS x(d, k, i)
          WHERE NOT CASE WHEN x.k = 'blob' THEN EXISTS (SELECT 1 FROM repo_blobs WHERE repo = $1 AND digest = x.d)
                         ELSE EXISTS (SELECT 1 FROM manifests WHERE repo = $1 AND digest = x.d) END`,
          [m.repo, m.refs.map((r) => r.digest), m.refs.map((r) => r.kind)]);
        for (const row of r.rows) absent.add(row.i as number);
      }
      const missing = m.refs.filter((r, i) => !r.optional && absent.has(i + 1));
      if (missing.length > 0) return { missing };
      // The refs recorded: all but optional ones that are absent, first kind of a digest wins (as INSERT OR IGNORE).
      const kinds = new Map<string, string>();
      m.refs.forEach((r, i) => {
        if (!absent.has(i + 1) && !kinds.has(r.digest)) kinds.set(r.digest, r.kind);
      });
      await q(`WITH r AS (INSERT INTO repositories (name, created_ms) VALUES ($1, $9) ON CONFLICT DO NOTHING),
          m AS (INSERT INTO manifests (repo, digest, media_type, artifact_type, subject, annotations, size, content, created_ms, image_blob, base_blob, backing_file)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (repo, digest) DO UPDATE SET media_type = excluded.media_type, artifact_type = excluded.artifact_type,
                  subject = excluded.subject, annotations = excluded.annotations, size = excluded.size, content = excluded.content,
                  image_blob = excluded.image_blob, base_blob = excluded.base_blob, backing_file = excluded.backing_file),
          old AS (DELETE FROM manifest_refs WHERE repo = $1 AND manifest = $2 AND NOT (ref = ANY($13::text[])))
        INSERT INTO manifest_refs (repo, manifest, ref, kind) SELECT $1, $2, d, k FROM unnest($13::text[], $14::text[]) AS x(d, k)
        ON CONFLICT (repo, manifest, ref) DO UPDATE SET kind = excluded.kind`,
        [m.repo, m.digest, m.mediaType, m.artifactType, m.subject, m.annotations ? JSON.stringify(m.annotations) : null,
          m.content.byteLength, m.content, t, f.imageBlob, f.baseBlob, f.backingFile, [...kinds.keys()], [...kinds.values()]]);
      if (m.tag !== null) await sql.moveTag(q, m.repo, m.tag, m.digest, source, t);
      return { missing: [] };
    });
  }

  deleteManifest(repo: string, digest: Digest, source: string): Promise<boolean> {
    const t = this.now();
    return this.inRepo(repo, (q) => sql.deleteManifest(q, repo, digest, source, t));
  }

  listManifests(repo: string): Promise<ManifestSummary[]> {
    return sql.listManifests(this.q, repo);
  }

  async manifestsReferencing(repo: string, digest: Digest): Promise<ManifestSummary[]> {
    const cols = sql.SUMMARY.replace(/(^|, )/g, '$1m.');
    const r = await this.q(`SELECT ${cols} FROM manifest_refs r JOIN manifests m ON m.repo = r.repo AND m.digest = r.manifest
      WHERE r.repo = $1 AND r.ref = $2 ORDER BY m.created_ms DESC, m.digest`, [repo, digest]);
    return r.rows.map((x) => sql.toSummary(x, []));
  }

  async referrers(repo: string, subject: Digest) {
    const r = await this.q(`SELECT ${sql.SUMMARY}, annotations FROM manifests WHERE repo = $1 AND subject = $2 ORDER BY created_ms, digest`, [repo, subject]);
    return r.rows.map((x) => ({ ...sql.toSummary(x, []), annotations: sql.annotationsOf(x) }));
  }

  // ---- tags ----

  resolveTag(repo: string, tag: string): Promise<Digest | null> {
    return sql.resolveTag(this.q, repo, tag);
  }

  async setTag(repo: string, tag: string, digest: Digest | null, source: string): Promise<void> {
    const t = this.now();
    await this.inRepo(repo, (q) => sql.moveTag(q, repo, tag, digest, source, t));
  }

  async listTags(repo: string, n: number, last: string): Promise<string[]> {
    return (await this.q('SELECT tag FROM tags WHERE repo = $1 AND tag > $2 ORDER BY tag LIMIT $3', [repo, last, n])).rows.map((r) => r.tag as string);
  }

  tagsOf(repo: string, digest: Digest): Promise<string[]> {
    return sql.tagsOf(this.q, repo, digest);
  }

  tagHistory(repo: string, tag: string) {
    return sql.tagHistory(this.q, repo, tag);
  }

  tagRows(repo: string) {
    return sql.tagRows(this.q, repo);
  }

  // ---- lifecycle ----

  moveTag(repo: string, tag: string, target: { digest: string } | { tag: string }) {
    return this.lifecycle(repo, (tx) => lifecycle.moveTag(tx, repo, tag, target));
  }
  removeTag(repo: string, tag: string) {
    return this.lifecycle(repo, (tx) => lifecycle.removeTag(tx, repo, tag));
  }
  rollbackTag(repo: string, tag: string, how: { steps?: number; to?: string }) {
    return this.lifecycle(repo, (tx) => lifecycle.rollbackTag(tx, repo, tag, how));
  }
  removeManifest(repo: string, digest: string) {
    return this.lifecycle(repo, (tx) => lifecycle.removeManifest(tx, repo, digest));
  }
  prune(repo: string, opts: { keep: number; match?: string | null; dryRun?: boolean }) {
    return this.lifecycle(repo, (tx) => lifecycle.prune(tx, repo, opts));
  }

  // ---- upload records ----

  async createUpload(id: string, repo: string): Promise<void> {
    const t = this.now();
    await this.q(`WITH r AS (INSERT INTO repositories (name, created_ms) VALUES ($2, $3) ON CONFLICT DO NOTHING)
      INSERT INTO uploads (id, repo, size, created_ms, updated_ms, owner, owner_url) VALUES ($1, $2, 0, $3, $3, $4, $5)`, [id, repo, t, this.owner, this.ownerUrl]);
  }

  async getUpload(id: string): Promise<UploadRecord | null> {
    const r = await this.q('SELECT id, repo, size, created_ms AS "createdMs", updated_ms AS "updatedMs" FROM uploads WHERE id = $1', [id]);
    return (r.rows[0] as UploadRecord | undefined) ?? null;
  }

  async setUploadSize(id: string, size: number): Promise<void> {
    await this.q('UPDATE uploads SET size = $1, updated_ms = $2 WHERE id = $3', [size, this.now(), id]);
  }

  async deleteUpload(id: string): Promise<boolean> {
    return ((await this.q('DELETE FROM uploads WHERE id = $1', [id])).rowCount ?? 0) > 0;
  }

  /** This process's upload records, and every record idle past uploadStaleMs (other replicas' live sessions stay). */
  async clearUploads(): Promise<void> {
    await this.q('DELETE FROM uploads WHERE owner = $1 OR updated_ms < $2', [this.owner, this.now() - this.uploadStaleMs]);
  }

  // ---- gc ----

  async gcLiveBlobs(cutoffMs: number): Promise<Set<Digest>> {
    const r = await this.q(`SELECT ref AS d FROM manifest_refs WHERE kind = 'blob' UNION SELECT digest FROM repo_blobs WHERE created_ms >= $1`, [cutoffMs]);
    return new Set(r.rows.map((x) => x.d as Digest));
  }

  async gcBlobs(cutoffMs: number, dryRun: boolean): Promise<{ unlinked: number; deleted: Digest[] }> {
    const stale = `FROM repo_blobs WHERE repo_blobs.created_ms < $1 AND NOT EXISTS
      (SELECT 1 FROM manifest_refs r WHERE r.repo = repo_blobs.repo AND r.ref = repo_blobs.digest)`;
    const orphans = `SELECT digest FROM blobs b WHERE NOT EXISTS (SELECT 1 FROM manifest_refs r WHERE r.ref = b.digest)
      AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest AND (rb.created_ms >= $1 OR EXISTS
        (SELECT 1 FROM manifest_refs r2 WHERE r2.repo = rb.repo AND r2.ref = rb.digest))) ORDER BY digest`;
    // Exclusive: no commit links a blob (or checks a link) while its record may go.
    return this.db.tx([this.gcExclusive], async (q) => {
      const deleted = (await q(orphans, [cutoffMs])).rows.map((r) => r.digest as Digest);
      if (dryRun) return { unlinked: ((await q(`SELECT COUNT(*) AS n ${stale}`, [cutoffMs])).rows[0] as { n: number }).n, deleted };
      const unlinked = (await q(`DELETE ${stale}`, [cutoffMs])).rowCount ?? 0;
      if (deleted.length > 0) await q('DELETE FROM blobs WHERE digest = ANY($1::text[])', [deleted]);
      return { unlinked, deleted };
    });
  }

  // ---- digest aliases ----

  async resolveAlias(d: AnyDigest): Promise<Digest | null> {
    if (d.startsWith('sha256:')) return d as Digest;
    return ((await this.q('SELECT digest FROM digest_aliases WHERE alias = $1', [d])).rows[0]?.digest as Digest | undefined) ?? null;
  }

  async addAlias(alias: Sha512Digest, canonical: Digest): Promise<void> {
    await this.q('INSERT INTO digest_aliases (alias, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING', [alias, canonical]);
  }
}

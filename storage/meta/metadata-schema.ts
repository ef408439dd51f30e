import type Database from 'better-sqlite3';
import { manifestFacts } from './manifest-facts.js';

/**
 * Metadata schema, versioned with PRAGMA user_version. Each migration runs in
 * one transaction; a new version appends a step, never edits an old one.
 *
 *   repositories  a repository name, created when something is first pushed to it
 *   blobs         every blob: digest -> size and the digest of its chunk index
 *   repo_blobs    which repositories a blob is linked into (OCI blobs are per repository)
 *   manifests     manifests per repository, with their exact bytes and what
 *                 listings need of them (image_blob, base_blob, backing_file:
 *                 manifest-facts.ts), so listings never parse manifests
 *   manifest_refs what a manifest references (blobs, child manifests): for integrity and GC
 *   tags          current tag -> manifest digest
 *   tag_events    every tag move (time, old digest, new digest, source)
 *   uploads       open upload sessions
 */
type Migration = string | ((db: Database.Database) => void);

const MIGRATIONS: Migration[] = [
  `
  CREATE TABLE repositories (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    index_digest TEXT NOT NULL,
    created_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE repo_blobs (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
  ) WITHOUT ROWID;
  CREATE INDEX repo_blobs_by_digest ON repo_blobs(digest);
  CREATE TABLE manifests (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    size INTEGER NOT NULL,
    content BLOB NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (repo, digest)
  ) WITHOUT ROWID;
  CREATE INDEX manifests_by_subject ON manifests(repo, subject);
  CREATE TABLE manifest_refs (
    repo TEXT NOT NULL,
    manifest TEXT NOT NULL,
    ref TEXT NOT NULL,
    kind TEXT NOT NULL,
    PRIMARY KEY (repo, manifest, ref)
  ) WITHOUT ROWID;
  CREATE INDEX manifest_refs_by_ref ON manifest_refs(ref);
  CREATE TABLE tags (
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    digest TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (repo, tag)
  ) WITHOUT ROWID;
  CREATE INDEX tags_by_digest ON tags(repo, digest);
  CREATE TABLE tag_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo TEXT NOT NULL,
    tag TEXT NOT NULL,
    old_digest TEXT,
    new_digest TEXT,
    at_ms INTEGER NOT NULL,
    source TEXT NOT NULL
  );
  CREATE INDEX tag_events_by_tag ON tag_events(repo, tag, id);
  CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // 2: listing metadata on manifests (manifest-facts.ts), filled for the manifests already stored.
  (db) => {
    db.exec(`
      ALTER TABLE manifests ADD COLUMN image_blob TEXT;
      ALTER TABLE manifests ADD COLUMN base_blob TEXT;
      ALTER TABLE manifests ADD COLUMN backing_file TEXT;
    `);
    const set = db.prepare('UPDATE manifests SET image_blob = ?, base_blob = ?, backing_file = ? WHERE repo = ? AND digest = ?');
    // In pages (a connection cannot write while it iterates), so at most 64 manifests are held at once.
    const page = db.prepare('SELECT repo, digest, content, annotations FROM manifests WHERE (repo, digest) > (?, ?) ORDER BY repo, digest LIMIT 64');
    for (let last = ['', '']; ; ) {
      const rows = page.all(last[0], last[1]) as Array<{ repo: string; digest: string; content: Buffer; annotations: string | null }>;
      if (rows.length === 0) break;
      for (const r of rows) {
        let ann: Record<string, string> = {};
        try {
          ann = r.annotations ? (JSON.parse(r.annotations) as Record<string, string>) : {};
        } catch {
          /* unreadable annotations: none */
        }
        const f = manifestFacts(r.content, ann);
        set.run(f.imageBlob, f.baseBlob, f.backingFile, r.repo, r.digest);
      }
      last = [rows[rows.length - 1]!.repo, rows[rows.length - 1]!.digest];
    }
  },
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new Error(`metadata schema version ${current} is newer than this snapyard (${SCHEMA_VERSION})`);
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    // IMMEDIATE, and the version read again inside: another process opening
    // the same store at once may have run this step already.
    db.transaction(() => {
      if ((db.pragma('user_version', { simple: true }) as number) !== v) return;
      const m = MIGRATIONS[v]!;
      if (typeof m === 'string') db.exec(m);
      else m(db);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}

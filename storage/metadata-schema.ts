import type Database from 'better-sqlite3';

/**
 * Metadata schema, versioned with PRAGMA user_version. Each migration runs in
 * one transaction; a new version appends a step, never edits an old one.
 *
 *   repositories  a repository name, created when something is first pushed to it
 *   blobs         every blob: digest -> size and the digest of its chunk index
 *   repo_blobs    which repositories a blob is linked into (OCI blobs are per repository)
 *   manifests     manifests per repository, with their exact bytes
 *   manifest_refs what a manifest references (blobs, child manifests): for integrity and GC
 *   tags          current tag -> manifest digest
 *   tag_events    every tag move (time, old digest, new digest, source)
 *   uploads       open upload sessions
 */
const MIGRATIONS: string[] = [
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
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new Error(`metadata schema version ${current} is newer than this snapyard (${SCHEMA_VERSION})`);
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

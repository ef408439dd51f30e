/**
 * The PostgreSQL metadata schema (postgres-metadata-store.ts): the same tables
 * as SQLite's (metadata-schema.ts, digest-aliases.ts), in the first schema of
 * the connection's search_path (`?options=-c%20search_path%3DNAME` in the URL
 * puts a registry in a schema of its own).
 *
 * Versioned in `snapyard_schema`, migrated at start by PgDatabase.migrate
 * under the advisory lock lockKey(schema, 'migrate'): replicas starting at
 * once migrate once. A new version appends a step, never edits an old one.
 *
 * Keys and names are `text COLLATE "C"`, so listings sort bytewise as
 * SQLite's do (and as the OCI tag list wants) whatever the database's
 * locale. Times are ms since the epoch (bigint); manifest bytes are bytea;
 * annotations the JSON text they were given as.
 */

const T = 'text COLLATE "C"';

export const PG_MIGRATIONS: string[] = [
  `
  CREATE TABLE repositories (
    name ${T} PRIMARY KEY,
    created_ms bigint NOT NULL
  );
  CREATE TABLE blobs (
    digest ${T} PRIMARY KEY,
    size bigint NOT NULL,
    index_digest ${T} NOT NULL,
    created_ms bigint NOT NULL
  );
  CREATE TABLE repo_blobs (
    repo ${T} NOT NULL,
    digest ${T} NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (repo, digest)
  );
  CREATE INDEX repo_blobs_by_digest ON repo_blobs(digest);
  CREATE TABLE manifests (
    repo ${T} NOT NULL,
    digest ${T} NOT NULL,
    media_type text NOT NULL,
    artifact_type text,
    subject ${T},
    annotations text,
    size bigint NOT NULL,
    content bytea NOT NULL,
    created_ms bigint NOT NULL,
    image_blob ${T},
    base_blob ${T},
    backing_file text,
    PRIMARY KEY (repo, digest)
  );
  CREATE INDEX manifests_by_subject ON manifests(repo, subject);
  CREATE TABLE manifest_refs (
    repo ${T} NOT NULL,
    manifest ${T} NOT NULL,
    ref ${T} NOT NULL,
    kind text NOT NULL,
    PRIMARY KEY (repo, manifest, ref)
  );
  CREATE INDEX manifest_refs_by_ref ON manifest_refs(ref);
  CREATE TABLE tags (
    repo ${T} NOT NULL,
    tag ${T} NOT NULL,
    digest ${T} NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (repo, tag)
  );
  CREATE INDEX tags_by_digest ON tags(repo, digest);
  CREATE TABLE tag_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    repo ${T} NOT NULL,
    tag ${T} NOT NULL,
    old_digest ${T},
    new_digest ${T},
    at_ms bigint NOT NULL,
    source text NOT NULL
  );
  CREATE INDEX tag_events_by_tag ON tag_events(repo, tag, id);
  -- owner: the process that holds the session (upload sessions live in its memory).
  CREATE TABLE uploads (
    id ${T} PRIMARY KEY,
    repo ${T} NOT NULL,
    size bigint NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    owner text NOT NULL
  );
  CREATE INDEX uploads_by_owner ON uploads(owner);
  CREATE TABLE digest_aliases (
    alias ${T} PRIMARY KEY,
    digest ${T} NOT NULL
  );
  `,
  // 2: coordination of replicas (storage/coord/postgres-coordinator.ts).
  // owner_url: where other replicas forward an upload session's requests.
  // push_sessions: delta push sessions (any replica continues one).
  // maintenance_lease: who holds the maintenance lock (one gc or verify at a time); token is the fence.
  `
  ALTER TABLE uploads ADD COLUMN owner_url text;
  CREATE TABLE push_sessions (
    id ${T} PRIMARY KEY,
    repo ${T} NOT NULL,
    width integer NOT NULL,
    compact bytea NOT NULL,
    created_ms bigint NOT NULL,
    active_ms bigint NOT NULL,
    owner text NOT NULL
  );
  CREATE TABLE maintenance_lease (
    name text PRIMARY KEY,
    holder text NOT NULL,
    token bigint NOT NULL,
    since_ms bigint NOT NULL
  );
  `,
];

export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length;

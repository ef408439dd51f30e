/**
 * The metadata stores under test (test/metadata-store.*.test.ts): SQLite in a
 * temp directory, PostgreSQL in a fresh schema of the run's server
 * (test/helpers/services.ts), both on a clock the test moves; and manifests
 * to commit into them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll } from 'vitest';
import type { Digest } from '../../storage/digest.js';
import type { MetadataStore, NewManifest } from '../../storage/meta/metadata-store.js';
import { openPostgresMetadata, type PostgresMetadataOptions, type PostgresMetadataStore } from '../../storage/meta/postgres-metadata-store.js';
import { SqliteMetadataStore } from '../../storage/meta/sqlite-metadata-store.js';
import { testPostgres } from './services.js';
import { tempDirs } from './tmp.js';

/** A clock the test moves (ms). */
export interface Clock {
  t: number;
  now: () => number;
}

export function clock(start = 1_700_000_000_000): Clock {
  const c: Clock = { t: start, now: () => c.t };
  return c;
}

const newDir = tempDirs('snapyard-meta-');
const schemas: string[] = [];
afterAll(() => dropSchemas(schemas.splice(0)));

async function dropSchemas(names: string[]): Promise<void> {
  if (names.length === 0) return;
  const c = new pg.Client(await testPostgres());
  await c.connect();
  try {
    for (const s of names) await c.query(`DROP SCHEMA IF EXISTS ${s} CASCADE`);
  } finally {
    await c.end();
  }
}

/** A URL of the run's PostgreSQL whose search_path is a new, empty schema (dropped after the file). */
export async function freshPostgresUrl(): Promise<string> {
  const base = await testPostgres();
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const c = new pg.Client(base);
  await c.connect();
  try {
    await c.query(`CREATE SCHEMA ${schema}`);
  } finally {
    await c.end();
  }
  schemas.push(schema);
  return withSearchPath(base, schema);
}

/** Drops the schema of a URL freshPostgresUrl gave, now rather than after the file. */
export async function dropPostgresSchema(url: string): Promise<void> {
  const schema = /search_path=(t_[0-9a-f]+)/.exec(new URL(url).searchParams.get('options') ?? '')?.[1];
  if (!schema) throw new Error(`${url}: not a schema freshPostgresUrl made`);
  const at = schemas.indexOf(schema);
  if (at >= 0) schemas.splice(at, 1);
  await dropSchemas([schema]); // IF EXISTS: the file's own cleanup may have dropped it already
}

export function withSearchPath(url: string, schema: string): string {
  const u = new URL(url);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return u.toString();
}

export interface Impl {
  name: 'sqlite' | 'postgres';
  /** A new, empty store on `c`'s clock. */
  open(c: Clock): Promise<MetadataStore>;
}

export const IMPLS: Impl[] = [
  { name: 'sqlite', open: async (c) => new SqliteMetadataStore(join(newDir(), 'meta.db'), { now: c.now }) },
  { name: 'postgres', open: async (c) => openPostgresMetadata(await freshPostgresUrl(), { now: c.now, poolSize: 4 }) },
];

/** Another PostgreSQL store (a replica) on the database of `url`. */
export function replica(url: string, c: Clock, opts: PostgresMetadataOptions = {}): Promise<PostgresMetadataStore> {
  return openPostgresMetadata(url, { now: c.now, poolSize: 4, ...opts });
}

export function digestOf(s: string | Buffer): Digest {
  return `sha256:${createHash('sha256').update(s).digest('hex')}`;
}

export const LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const IMAGE = 'application/vnd.oci.image.manifest.v1+json';
export const INDEX = 'application/vnd.oci.image.index.v1+json';

/** An image manifest of these layers (and annotations / subject / artifactType), ready for commitManifest. */
export function image(repo: string, layers: Array<{ digest: Digest; size: number }>, o: { tag?: string | null; annotations?: Record<string, string>; subject?: Digest; artifactType?: string; optional?: Digest[] } = {}): NewManifest {
  const doc = {
    schemaVersion: 2,
    mediaType: IMAGE,
    ...(o.artifactType ? { artifactType: o.artifactType } : {}),
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf('{}'), size: 2 },
    layers: layers.map((l) => ({ mediaType: LAYER, ...l })),
    ...(o.subject ? { subject: { mediaType: IMAGE, digest: o.subject, size: 1 } } : {}),
    ...(o.annotations ? { annotations: o.annotations } : {}),
  };
  const content = Buffer.from(JSON.stringify(doc));
  return {
    repo,
    digest: digestOf(content),
    mediaType: IMAGE,
    artifactType: o.artifactType ?? null,
    subject: o.subject ?? null,
    annotations: o.annotations ?? null,
    content,
    refs: layers.map((l) => ({ digest: l.digest, kind: 'blob' as const, ...(o.optional?.includes(l.digest) ? { optional: true } : {}) })),
    tag: o.tag ?? null,
  };
}

/** An index listing these manifests. */
export function index(repo: string, children: Digest[], tag: string | null = null): NewManifest {
  const content = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: children.map((d) => ({ mediaType: IMAGE, digest: d, size: 1 })) }));
  return { repo, digest: digestOf(content), mediaType: INDEX, artifactType: null, subject: null, annotations: null, content, refs: children.map((d) => ({ digest: d, kind: 'manifest' as const })), tag };
}

/** Records a blob (digest of `name`) of `size` bytes in `repo`. */
export async function blob(s: MetadataStore, repo: string, name: string, size = 100): Promise<{ digest: Digest; size: number }> {
  const d = digestOf(name);
  await s.commitBlob(repo, { digest: d, size, indexDigest: digestOf(`index of ${name}`) });
  return { digest: d, size };
}

/** The SnapyardError code a promise rejects with (fails when it resolves). */
export async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return String((e as { code?: unknown }).code);
  }
  throw new Error('expected a rejection');
}

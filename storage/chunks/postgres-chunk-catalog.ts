/**
 * The chunk catalog in PostgreSQL, shared by the replicas of one registry
 * (pack bytes in S3: s3-pack-driver.ts). Connection, retries and error
 * mapping: ../meta/postgres-db.ts; it lives beside the metadata tables (same
 * database and schema) with tables and a version table of its own.
 *
 * Schema: `snapyard_chunks` (digest bytea primary key, pack id, offset,
 * stored and raw lengths, mtime in ms) and `snapyard_chunk_packs` (id, name):
 * a pack name is stored once. Pack ids are never deleted, so this process
 * caches them.
 *
 * Round trips: lookup, commit, remove, resolvePrefixes, packLive, inPack and
 * stats are one statement each, whatever the batch holds (digests go as
 * arrays: `= ANY($1::bytea[])`, `unnest(...)`); a commit naming packs this
 * process has not seen yet registers them in the same statement. move is
 * one, plus one when it names a pack this process has not seen. sweep and
 * all() page by digest (keyset), `pageSize` rows a statement.
 *
 * Sweep racing touches (gc on one replica, pushes on others): no lock is
 * held across a sweep. Each batch is one autocommit statement
 * `DELETE ... WHERE digest = ANY(victims) AND mtime_ms < cutoff`; under READ
 * COMMITTED a row that a concurrent commit touched is re-read at its newest
 * version and the condition checked again, so a touch committed before the
 * delete reaches its row keeps it. A touch that comes after the delete finds
 * no row: commit() answers it in `absent`, so the writer knows the chunk is
 * gone (and a blob commit checking its chunks refuses with CHUNK_MISSING);
 * it never believes a chunk held that is not. Times only move forward
 * (GREATEST), so a replica with a slow clock cannot age a chunk another
 * refreshed. Statements that may repeat (commit, sweep's deletes) are run
 * again on a deadlock or serialization failure; digests are sent sorted so
 * concurrent commits lock rows in one order.
 */
import { lockKey, PgDatabase, type PgOptions } from '../meta/postgres-db.js';
import { CATALOG_PAGE, hexKey, type CatalogEntry, type CatalogMove, type ChunkCatalog, type NewCatalogEntry } from './chunk-catalog.js';

const MIGRATIONS: string[] = [
  `
  CREATE TABLE snapyard_chunk_packs (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE
  );
  CREATE TABLE snapyard_chunks (
    digest bytea PRIMARY KEY CHECK (octet_length(digest) = 32),
    pack integer NOT NULL,
    off bigint NOT NULL,
    length integer NOT NULL,
    raw_length integer NOT NULL,
    mtime_ms bigint NOT NULL
  );
  CREATE INDEX snapyard_chunks_by_pack ON snapyard_chunks(pack, off);
  `,
];

export const CHUNK_CATALOG_SCHEMA_VERSION = MIGRATIONS.length;

export interface PostgresChunkCatalogOptions extends PgOptions {
  /** Rows per sweep batch and per all() page (default CATALOG_PAGE). */
  pageSize?: number;
}

/** Registers pack names ($1): answers every one's id, new or not (DO UPDATE returns existing rows too). */
const UPSERT_PACKS = `INSERT INTO snapyard_chunk_packs AS p (name) SELECT DISTINCT unnest($1::text[])
  ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING p.id, p.name`;

const ENTRY = 'c.digest, p.name AS pack, c.off AS offset, c.length, c.raw_length AS "rawLength", c.mtime_ms AS "mtimeMs"';
const JOINED = 'snapyard_chunks c JOIN snapyard_chunk_packs p ON p.id = c.pack';

/**
 * One statement: registers the new pack names ($1; the known ones are $2
 * ids / $3 names), records the added rows ($4..$8) at $9 (a row already
 * there keeps its place, its time refreshed), touches $10. Answers the new
 * packs' rows and the touched digests.
 */
const COMMIT = `WITH newp AS (${UPSERT_PACKS}),
  packs AS (SELECT id, name FROM newp UNION ALL SELECT * FROM unnest($2::int[], $3::text[]) AS k(id, name)),
  added AS (
    INSERT INTO snapyard_chunks AS c (digest, pack, off, length, raw_length, mtime_ms)
    SELECT a.digest, packs.id, a.off, a.length, a.raw_length, $9
    FROM unnest($4::bytea[], $5::text[], $6::bigint[], $7::int[], $8::int[]) AS a(digest, pack, off, length, raw_length)
    JOIN packs ON packs.name = a.pack
    ORDER BY a.digest
    ON CONFLICT (digest) DO UPDATE SET mtime_ms = GREATEST(c.mtime_ms, EXCLUDED.mtime_ms)
  ),
  touched AS (
    UPDATE snapyard_chunks c SET mtime_ms = GREATEST(c.mtime_ms, $9) WHERE c.digest = ANY($10::bytea[]) RETURNING c.digest
  )
  SELECT id, name, NULL::bytea AS digest FROM newp UNION ALL SELECT NULL, NULL, digest FROM touched`;

const MOVE = `UPDATE snapyard_chunks c SET pack = tp.id, off = m.to_off
  FROM unnest($1::bytea[], $2::text[], $3::bigint[], $4::text[], $5::bigint[]) AS m(digest, from_pack, from_off, to_pack, to_off)
  JOIN snapyard_chunk_packs fp ON fp.name = m.from_pack JOIN snapyard_chunk_packs tp ON tp.name = m.to_pack
  WHERE c.digest = m.digest AND c.pack = fp.id AND c.off = m.from_off`;

function buf(raw: Uint8Array): Buffer {
  return Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
}

/** Distinct digests, sorted (the order rows are locked in). */
function sortedUnique<T>(items: T[], raw: (t: T) => Uint8Array): T[] {
  const seen = new Map<string, T>();
  for (const it of items) {
    const k = hexKey(raw(it));
    if (!seen.has(k)) seen.set(k, it);
  }
  return [...seen.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map((e) => e[1]);
}

/** Opens (and migrates) the catalog at a postgres:// URL (search_path picks the schema); STORE_UNAVAILABLE when the server does not answer. */
export async function openPostgresChunkCatalog(url: string, opts: PostgresChunkCatalogOptions = {}): Promise<PostgresChunkCatalog> {
  const db = new PgDatabase(url, { label: 'chunk catalog', ...opts });
  try {
    const schema = await db.currentSchema();
    await db.migrate({ table: 'snapyard_chunk_schema', lock: lockKey(schema, 'chunk-catalog-migrate'), steps: MIGRATIONS, what: 'chunk catalog schema', now: Date.now() });
    return new PostgresChunkCatalog(db, opts);
  } catch (e) {
    await db.close().catch(() => {});
    throw e;
  }
}

type Row = { digest: Buffer; pack: string; offset: number; length: number; rawLength: number; mtimeMs: number };

export class PostgresChunkCatalog implements ChunkCatalog {
  readonly location: string;
  private readonly pageSize: number;
  /** Pack name -> id (ids are never reused or deleted). */
  private readonly packIds = new Map<string, number>();

  constructor(private readonly db: PgDatabase, opts: PostgresChunkCatalogOptions = {}) {
    this.location = `${db.location} (chunk catalog)`;
    this.pageSize = opts.pageSize ?? CATALOG_PAGE;
  }

  /** Statements sent so far (one round trip each). */
  get roundTrips(): number {
    return this.db.roundTrips;
  }

  async lookup(raws: Uint8Array[]): Promise<Array<CatalogEntry | null>> {
    if (raws.length === 0) return [];
    const { rows } = await this.db.query(`SELECT ${ENTRY} FROM ${JOINED} WHERE c.digest = ANY($1::bytea[])`, [raws.map(buf)]);
    const found = new Map<string, CatalogEntry>();
    for (const { digest, ...e } of rows as Row[]) found.set(digest.toString('hex'), e);
    return raws.map((r) => found.get(hexKey(r)) ?? null);
  }

  async commit(added: NewCatalogEntry[], touched: Uint8Array[], nowMs: number): Promise<{ absent: number[] }> {
    if (added.length === 0 && touched.length === 0) return { absent: [] };
    const adds = sortedUnique(added, (a) => a.raw);
    const addedKeys = new Set(adds.map((a) => hexKey(a.raw)));
    // A digest both added and touched is refreshed by its insert (the update would not see the new row).
    const touches = sortedUnique(touched.filter((t) => !addedKeys.has(hexKey(t))), (t) => t);
    const names = [...new Set(adds.map((a) => a.pack))];
    const unknown = names.filter((n) => !this.packIds.has(n));
    const known = names.filter((n) => this.packIds.has(n));
    const { rows } = await this.db.queryRetried(COMMIT, [
      unknown, known.map((n) => this.packIds.get(n)!), known,
      adds.map((a) => buf(a.raw)), adds.map((a) => a.pack), adds.map((a) => a.offset), adds.map((a) => a.length), adds.map((a) => a.rawLength),
      nowMs, touches.map(buf),
    ]);
    const held = new Set(addedKeys);
    for (const r of rows as Array<{ id: number | null; name: string | null; digest: Buffer | null }>) {
      if (r.digest) held.add(r.digest.toString('hex'));
      else this.packIds.set(r.name!, r.id!);
    }
    const absent: number[] = [];
    touched.forEach((t, i) => {
      if (!held.has(hexKey(t))) absent.push(i);
    });
    return { absent };
  }

  async resolvePrefixes(prefixes: Uint8Array[]): Promise<Array<Uint8Array | null | 'ambiguous'>> {
    if (prefixes.length === 0) return [];
    const ps = prefixes.map(buf);
    // For each prefix, a range scan of the key from it on: at most two rows to look at; one statement for all.
    const { rows } = await this.db.query(
      `SELECT p.i, d.digest FROM unnest($1::bytea[]) WITH ORDINALITY AS p(prefix, i)
       CROSS JOIN LATERAL (SELECT digest FROM snapyard_chunks WHERE digest >= p.prefix ORDER BY digest LIMIT 2) d`,
      [ps],
    );
    const hits: Buffer[][] = ps.map(() => []);
    for (const r of rows as Array<{ i: number | string; digest: Buffer }>) {
      const k = Number(r.i) - 1;
      if (r.digest.subarray(0, ps[k]!.byteLength).equals(ps[k]!)) hits[k]!.push(r.digest);
    }
    return hits.map((h) => (h.length === 0 ? null : h.length === 1 ? h[0]! : 'ambiguous'));
  }

  async sweep(cutoffMs: number, keep: (raw: Uint8Array) => boolean, dryRun: boolean): Promise<{ chunks: number; storedBytes: number }> {
    let after: Buffer = Buffer.alloc(0);
    let chunks = 0;
    let storedBytes = 0;
    for (;;) {
      const { rows } = await this.db.query('SELECT digest, length FROM snapyard_chunks WHERE digest > $1 AND mtime_ms < $2 ORDER BY digest LIMIT $3', [after, cutoffMs, this.pageSize]);
      if (rows.length === 0) break;
      const page = rows as Array<{ digest: Buffer; length: number }>;
      after = page[page.length - 1]!.digest;
      const victims = page.filter((r) => !keep(r.digest));
      if (dryRun) {
        chunks += victims.length;
        for (const v of victims) storedBytes += v.length;
      } else if (victims.length > 0) {
        // Checked again at delete time: a row touched since the page was read stays.
        const gone = await this.db.queryRetried('DELETE FROM snapyard_chunks WHERE digest = ANY($1::bytea[]) AND mtime_ms < $2 RETURNING length', [victims.map((v) => v.digest), cutoffMs]);
        chunks += gone.rows.length;
        for (const r of gone.rows as Array<{ length: number }>) storedBytes += r.length;
      }
      if (page.length < this.pageSize) break;
    }
    return { chunks, storedBytes };
  }

  async packLive(): Promise<Map<string, { chunks: number; storedBytes: number }>> {
    const { rows } = await this.db.query(`SELECT p.name, COUNT(*) AS chunks, SUM(c.length) AS "storedBytes" FROM ${JOINED} GROUP BY p.name`);
    return new Map((rows as Array<{ name: string; chunks: number; storedBytes: number }>).map((r) => [r.name, { chunks: r.chunks, storedBytes: r.storedBytes }]));
  }

  async inPack(pack: string): Promise<Array<{ raw: Uint8Array; offset: number; length: number }>> {
    const { rows } = await this.db.query(`SELECT c.digest AS raw, c.off AS offset, c.length FROM ${JOINED} WHERE p.name = $1 ORDER BY c.off`, [pack]);
    return rows as Array<{ raw: Buffer; offset: number; length: number }>;
  }

  async move(moves: CatalogMove[]): Promise<number> {
    if (moves.length === 0) return 0;
    const unknown = [...new Set(moves.map((m) => m.to.pack))].filter((n) => !this.packIds.has(n));
    if (unknown.length > 0) {
      for (const r of (await this.db.queryRetried(UPSERT_PACKS, [unknown])).rows as Array<{ id: number; name: string }>) this.packIds.set(r.name, r.id);
    }
    const ms = sortedUnique(moves, (m) => m.raw);
    const r = await this.db.queryRetried(MOVE, [ms.map((m) => buf(m.raw)), ms.map((m) => m.from.pack), ms.map((m) => m.from.offset), ms.map((m) => m.to.pack), ms.map((m) => m.to.offset)]);
    return r.rowCount ?? 0;
  }

  async *all(): AsyncIterable<{ raw: Uint8Array } & CatalogEntry> {
    let after: Buffer = Buffer.alloc(0);
    for (;;) {
      const { rows } = await this.db.query(`SELECT ${ENTRY} FROM ${JOINED} WHERE c.digest > $1 ORDER BY c.digest LIMIT $2`, [after, this.pageSize]);
      if (rows.length === 0) return;
      after = (rows[rows.length - 1] as Row).digest;
      for (const { digest, ...e } of rows as Row[]) yield { raw: digest, ...e };
    }
  }

  async remove(raws: Uint8Array[]): Promise<void> {
    if (raws.length > 0) await this.db.query('DELETE FROM snapyard_chunks WHERE digest = ANY($1::bytea[])', [raws.map(buf)]);
  }

  async stats(): Promise<{ chunks: number; storedBytes: number; rawBytes: number }> {
    const { rows } = await this.db.query('SELECT COUNT(*) AS chunks, COALESCE(SUM(length), 0) AS "storedBytes", COALESCE(SUM(raw_length), 0) AS "rawBytes" FROM snapyard_chunks');
    return rows[0] as { chunks: number; storedBytes: number; rawBytes: number };
  }

  close(): Promise<void> {
    return this.db.close();
  }
}

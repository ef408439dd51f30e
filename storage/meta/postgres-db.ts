/**
 * The PostgreSQL connection of the metadata store (postgres-metadata-store.ts):
 * a pg.Pool, transactions with bounded retries, advisory lock keys, and the
 * mapping of driver errors to SnapyardErrors.
 *
 * Serialization is by transaction-scoped advisory locks taken right after
 * BEGIN (in the same round trip), READ COMMITTED otherwise:
 *   - `lockKey(ns, 'gc')` shared by every transaction that adds or checks
 *     blob links and records; taken exclusively by gcBlobs, so gc never
 *     deletes a record a commit is linking;
 *   - `lockKey(ns, 'repo:' + name)` exclusive by every transaction that moves
 *     tags or stores or removes manifests of that repository, so two replicas
 *     moving one tag record both moves in order with the right old digests.
 * The global lock is always taken before a repository's (no lock cycles).
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import { SnapyardError } from '../errors.js';

/** What runs a statement: the pool (one statement, autocommit) or a transaction's client. */
export type Query = (sql: string, params?: unknown[]) => Promise<pg.QueryResult>;

export interface PgOptions {
  /** Pool size (default 10). */
  poolSize?: number;
  /** Server-side statement_timeout, lock waits included (default 30 s). */
  statementTimeoutMs?: number;
  /** Bound on connecting (and on waiting for a free pool client) (default 10 s). */
  connectTimeoutMs?: number;
  /** What the database holds, for error messages (default 'metadata store'). */
  label?: string;
}

/** Attempts of a transaction that fails on a serialization failure or a deadlock. */
const MAX_ATTEMPTS = 5;

/** A 64-bit advisory lock key for `name` in namespace `ns` (the schema), as a SQL literal. */
export function lockKey(ns: string, name: string): string {
  const h = createHash('sha256').update(`snapyard\0${ns}\0${name}`).digest();
  return BigInt.asIntN(64, h.readBigUInt64BE(0)).toString();
}

/** int8 (counts, sizes, times in ms) as numbers; everything else as pg parses it. */
const TYPES = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as pg.CustomTypesConfig['getTypeParser'],
};

/** Node and driver errors that mean the server is unreachable or the connection broke. */
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EPIPE', 'EAI_AGAIN']);
const CONNECTION_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|Query read timeout|connection error|Cannot use a pool after calling end|Client was closed/i;

/** True when a statement may be run again as a whole: a serialization failure or a deadlock. */
function retryable(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === '40001' || code === '40P01';
}

/** A short random pause before attempt `attempt` + 1. */
function backoff(attempt: number): Promise<void> {
  return new Promise((r) => setTimeout(r, 5 * attempt + Math.random() * 20 * attempt));
}

/** True when the error broke the connection (the client must not go back to the pool). */
function brokenConnection(e: unknown): boolean {
  const x = e as { code?: unknown; message?: unknown } | null;
  const code = typeof x?.code === 'string' ? x.code : '';
  return CONNECTION_CODES.has(code) || code.startsWith('08') || code.startsWith('57P') || CONNECTION_MESSAGES.test(String(x?.message ?? ''));
}

/**
 * A driver error as the typed error callers switch on: the server gone,
 * slow past statement_timeout, out of connections, read-only (a standby) or
 * still failing after the retries -> STORE_UNAVAILABLE; a constraint
 * violated -> CONFLICT; its disk full -> STORAGE_FULL. Anything else as is.
 */
export function storeError(e: unknown, location: string, label = 'metadata store'): unknown {
  if (e instanceof SnapyardError) return e;
  const x = e as { code?: unknown; message?: unknown } | null;
  const code = typeof x?.code === 'string' ? x.code : '';
  const msg = String(x?.message ?? e);
  const wrap = (c: 'STORE_UNAVAILABLE' | 'CONFLICT' | 'STORAGE_FULL', what: string) =>
    new SnapyardError(c, `${what} (${location}): ${msg}`, { cause: e, detail: code ? { pgCode: code } : undefined });
  if (code === '53100') return wrap('STORAGE_FULL', 'PostgreSQL is out of disk space');
  if (code.startsWith('23')) return wrap('CONFLICT', `${label} constraint violated`);
  if (brokenConnection(e) || code.startsWith('53') || ['57014', '55P03', '25006', '40001', '40P01'].includes(code)) {
    return wrap('STORE_UNAVAILABLE', `PostgreSQL ${label} unavailable`);
  }
  return e;
}

/** A pool and the transactions of one store. */
export class PgDatabase {
  readonly pool: pg.Pool;
  /** Statements sent (each one round trip), for tests and benchmarks. */
  roundTrips = 0;
  /** Where the store is, without credentials (for messages). */
  readonly location: string;
  private readonly label: string | undefined;

  constructor(url: string, opts: PgOptions = {}) {
    const u = new URL(url);
    u.password = '';
    this.location = `postgres://${u.username ? `${u.username}@` : ''}${u.host}${u.pathname}`;
    this.label = opts.label;
    const timeout = opts.statementTimeoutMs ?? 30_000;
    this.pool = new pg.Pool({
      connectionString: url,
      max: opts.poolSize ?? 10,
      connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
      statement_timeout: timeout,
      // A server that stops answering mid-statement: the client gives up a little after the server would have.
      query_timeout: timeout + 5_000,
      keepAlive: true,
      types: TYPES,
      application_name: 'snapyard',
    });
    // An idle client whose connection dies is dropped by the pool; without a listener the error would end the process.
    this.pool.on('error', () => {});
  }

  /** One statement in autocommit. */
  readonly query: Query = async (sql, params) => {
    this.roundTrips++;
    try {
      return await this.pool.query(sql, params);
    } catch (e) {
      throw storeError(e, this.location, this.label);
    }
  };

  /**
   * One statement in autocommit, run again (at most MAX_ATTEMPTS times) when
   * it fails on a serialization failure or a deadlock: for statements that
   * are their own transaction and may be repeated (upserts, conditional
   * updates and deletes).
   */
  async queryRetried(sql: string, params?: unknown[]): Promise<pg.QueryResult> {
    for (let attempt = 1; ; attempt++) {
      this.roundTrips++;
      try {
        return await this.pool.query(sql, params);
      } catch (e) {
        if (!retryable(e) || attempt >= MAX_ATTEMPTS) throw storeError(e, this.location, this.label);
        await backoff(attempt);
      }
    }
  }

  /**
   * Runs fn in one transaction on one client: BEGIN and `locks` (statements
   * taking advisory xact locks) in one round trip, then fn's statements,
   * then COMMIT. A serialization failure or deadlock runs it all again (at
   * most MAX_ATTEMPTS times); errors from fn (refusals) roll back and pass.
   */
  async tx<T>(locks: string[], fn: (q: Query) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (e) {
        throw storeError(e, this.location, this.label);
      }
      const q: Query = (sql, params) => {
        this.roundTrips++;
        return client.query(sql, params);
      };
      let broken: unknown = undefined;
      try {
        this.roundTrips++;
        await client.query(['BEGIN', ...locks.map((l) => `SELECT ${l}`)].join('; '));
        const r = await fn(q);
        this.roundTrips++;
        await client.query('COMMIT');
        return r;
      } catch (e) {
        if (brokenConnection(e)) broken = e;
        else {
          try {
            this.roundTrips++;
            await client.query('ROLLBACK');
          } catch (e2) {
            broken = e2;
          }
        }
        if (retryable(e) && attempt < MAX_ATTEMPTS) {
          await backoff(attempt);
          continue;
        }
        throw storeError(e, this.location, this.label);
      } finally {
        client.release(broken instanceof Error ? broken : broken !== undefined);
      }
    }
  }

  /** The first schema of the connection's search_path, where the tables go. */
  async currentSchema(): Promise<string> {
    const schema = ((await this.query('SELECT current_schema() AS s')).rows[0] as { s: string | null }).s;
    if (!schema) throw new Error(`${this.location}: no schema on the search_path to create the ${this.label ?? 'metadata store'} tables in`);
    return schema;
  }

  /**
   * Brings a versioned schema up to date: the missing `steps` in one
   * transaction under the advisory lock `lock`, the version read again under
   * it (replicas starting at once migrate once; the others wait and find it
   * done); one row per applied step in `table` (when, by whom). Steps are
   * only ever appended. Returns the versions this call applied.
   */
  async migrate(opts: { table: string; lock: string; steps: string[]; what: string; now: number }): Promise<number[]> {
    return this.tx([`pg_advisory_xact_lock(${opts.lock})`], async (q) => {
      await q(`CREATE TABLE IF NOT EXISTS ${opts.table} (version integer PRIMARY KEY, applied_ms bigint NOT NULL, applied_by text NOT NULL)`);
      const current = ((await q(`SELECT COALESCE(MAX(version), 0) AS v FROM ${opts.table}`)).rows[0] as { v: number }).v;
      if (current > opts.steps.length) throw new Error(`${opts.what} version ${current} is newer than this snapyard (${opts.steps.length})`);
      const applied: number[] = [];
      for (let v = current; v < opts.steps.length; v++) {
        await q(opts.steps[v]!);
        await q(`INSERT INTO ${opts.table} (version, applied_ms, applied_by) VALUES ($1, $2, $3)`, [v + 1, opts.now, `${hostname()}:${process.pid}`]);
        applied.push(v + 1);
      }
      return applied;
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/**
 * Coordination of replicas over the metadata's PostgreSQL database (tables:
 * push_sessions, maintenance_lease and uploads.owner_url, postgres-schema.ts
 * step 2).
 *
 * Push sessions are rows (the compact index as bytea): any replica answers
 * `_upload` and `_commit` of a session another opened, and a replica that
 * dies leaves sessions that expire after the TTL like any other.
 *
 * The maintenance lease is a session-level advisory lock, held by a
 * connection of its own for the whole gc or verify: a replica that dies
 * (kill -9 included) closes that connection and PostgreSQL frees the lock at
 * once. Each holder also records itself in the maintenance_lease row with the
 * next token; `check()`, the fence a gc calls before each destructive step,
 * reads the token on the lock's connection: a holder whose connection broke
 * (and whose lock another replica may hold by now) stops there.
 */
import { SnapyardError } from '../errors.js';
import type pg from 'pg';
import { lockKey, storeError, type PgDatabase } from '../meta/postgres-db.js';
import { AsyncLock } from './commit-lock.js';
import { indexesFull, type Coordinator, type MaintenanceLease, type PushSessionRecord } from './coordinator.js';

/** The database's clock, ms since the epoch. */
const DB_NOW = '(extract(epoch from clock_timestamp()) * 1000)::bigint';
const LEASE = 'maintenance';

export interface PostgresCoordinatorOptions {
  /** This process, as recorded with its upload records (PostgresMetadataStore.owner). */
  owner: string;
  /** Where other replicas reach this one (`serve --advertise-url`). */
  selfUrl?: string | null;
  /** Sessions idle longer than this are expired (the store's upload TTL). */
  sessionTtlMs: number;
  now?: () => number;
  /** The schema the tables are in (the advisory lock's key is derived from it). */
  schema: string;
  /** How long a gc or verify waits for another replica's to end before CONFLICT (default 15 min). */
  leaseWaitMs?: number;
  /** Pause between attempts to take a held lease (default 1 s). */
  leasePollMs?: number;
}

interface SessionRow {
  id: string;
  repo: string;
  width: number;
  created_ms: number;
  active_ms: number;
  compact?: Buffer;
}

export class PostgresCoordinator implements Coordinator {
  readonly selfUrl: string | null;
  private readonly now: () => number;
  private readonly local = new AsyncLock();
  private readonly lockKey: string;

  constructor(private readonly db: PgDatabase, private readonly opts: PostgresCoordinatorOptions) {
    this.selfUrl = opts.selfUrl ?? null;
    this.now = opts.now ?? Date.now;
    this.lockKey = lockKey(opts.schema, 'maintenance');
  }

  private get activeSince(): number {
    return this.now() - this.opts.sessionTtlMs;
  }

  async createPushSession(s: { id: string; repo: string; width: number; compact: Buffer }, maxIndexBytes: number): Promise<void> {
    const t = this.now();
    const held = (since: string) => `(SELECT COALESCE(SUM(octet_length(compact)), 0) FROM push_sessions WHERE active_ms >= ${since})`;
    const r = await this.db.query(
      `INSERT INTO push_sessions (id, repo, width, compact, created_ms, active_ms, owner)
       SELECT $1, $2, $3, $4::bytea, $5, $5, $6 WHERE ${held('$7')} + octet_length($4::bytea) <= $8 RETURNING 1`,
      [s.id, s.repo, s.width, s.compact, t, this.opts.owner, this.activeSince, maxIndexBytes],
    );
    if ((r.rowCount ?? 0) > 0) return;
    const open = (await this.db.query(`SELECT ${held('$1')} AS n`, [this.activeSince])).rows[0] as { n: string | number };
    throw indexesFull(Number(open.n), maxIndexBytes);
  }

  async getPushSession(id: string, withIndex: boolean): Promise<PushSessionRecord | null> {
    const r = await this.db.query(
      `UPDATE push_sessions SET active_ms = $2 WHERE id = $1 AND active_ms >= $3
       RETURNING id, repo, width, created_ms, active_ms${withIndex ? ', compact' : ''}`,
      [id, this.now(), this.activeSince],
    );
    const row = r.rows[0] as SessionRow | undefined;
    if (!row) return null;
    return { id: row.id, repo: row.repo, width: row.width, createdMs: Number(row.created_ms), activeMs: Number(row.active_ms), compact: row.compact ?? null };
  }

  async deletePushSession(id: string): Promise<boolean> {
    return ((await this.db.query('DELETE FROM push_sessions WHERE id = $1', [id])).rowCount ?? 0) > 0;
  }

  async expirePushSessions(idleBeforeMs: number): Promise<string[]> {
    const r = await this.db.query('DELETE FROM push_sessions WHERE active_ms < $1 RETURNING id', [idleBeforeMs]);
    return r.rows.map((x) => (x as { id: string }).id);
  }

  async openPushSessions(ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const r = await this.db.query('SELECT id FROM push_sessions WHERE id = ANY($1::text[])', [ids]);
    return new Set(r.rows.map((x) => (x as { id: string }).id));
  }

  async uploadHolder(id: string): Promise<string | null> {
    const r = await this.db.query('SELECT owner_url FROM uploads WHERE id = $1 AND owner <> $2 AND updated_ms >= $3', [id, this.opts.owner, this.activeSince]);
    return ((r.rows[0] as { owner_url: string | null } | undefined)?.owner_url) ?? null;
  }

  async oldestSessionMs(idleBeforeMs: number): Promise<number | null> {
    const r = await this.db.query(
      `SELECT LEAST((SELECT MIN(created_ms) FROM uploads WHERE updated_ms >= $1),
                    (SELECT MIN(created_ms) FROM push_sessions WHERE active_ms >= $1)) AS t`,
      [idleBeforeMs],
    );
    const t = (r.rows[0] as { t: string | number | null }).t;
    return t === null ? null : Number(t);
  }

  withMaintenance<T>(fn: (lease: MaintenanceLease) => Promise<T>): Promise<T> {
    return this.local.run(async () => {
      // A connection of its own holds the session-level advisory lock for the whole job.
      let client: pg.PoolClient;
      try {
        client = await this.db.pool.connect();
      } catch (e) {
        throw storeError(e, this.db.location);
      }
      let broken: unknown = undefined;
      // A checked-out client whose connection dies emits 'error': the fence reports it.
      const onError = (e: unknown) => (broken = e);
      client.on('error', onError);
      try {
        const token = await this.takeLease(client);
        const check = async (): Promise<void> => {
          let now: number | undefined;
          if (!broken) try {
            now = ((await client.query(`SELECT token FROM maintenance_lease WHERE name = '${LEASE}'`)).rows[0] as { token: number } | undefined)?.token;
          } catch (e) {
            broken = e;
          }
          if (now !== token) {
            throw new SnapyardError('CONFLICT', `the maintenance lease (token ${token}) was lost${broken ? ' with its connection' : ` to token ${now}`}: this gc or verify stopped`);
          }
        };
        return await fn({ check });
      } finally {
        if (broken === undefined) await client.query(`SELECT pg_advisory_unlock(${this.lockKey})`).catch((e: unknown) => (broken = e));
        client.off('error', onError);
        client.release(broken instanceof Error ? broken : broken !== undefined);
      }
    });
  }

  /**
   * Takes the advisory lock on `client` (waiting while another replica holds
   * it, up to leaseWaitMs), then records this holder with the next token.
   */
  private async takeLease(client: pg.PoolClient): Promise<number> {
    const deadline = Date.now() + (this.opts.leaseWaitMs ?? 15 * 60_000);
    for (;;) {
      const got = ((await client.query(`SELECT pg_try_advisory_lock(${this.lockKey}) AS ok`)).rows[0] as { ok: boolean }).ok;
      if (got) break;
      if (Date.now() >= deadline) {
        const h = (await client.query(`SELECT holder, since_ms FROM maintenance_lease WHERE name = '${LEASE}'`)).rows[0] as { holder: string; since_ms: number } | undefined;
        const who = h ? `${h.holder} (since ${new Date(h.since_ms).toISOString()})` : 'another replica';
        throw new SnapyardError('CONFLICT', `a gc or verify is running on ${who}: try again when it ends`);
      }
      await new Promise((r) => setTimeout(r, this.opts.leasePollMs ?? 1000));
    }
    const r = await client.query(
      `INSERT INTO maintenance_lease (name, holder, token, since_ms) VALUES ('${LEASE}', $1, 1, ${DB_NOW})
       ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, token = maintenance_lease.token + 1, since_ms = EXCLUDED.since_ms
       RETURNING token`,
      [this.opts.owner],
    );
    return (r.rows[0] as { token: number }).token;
  }

  async close(): Promise<void> {}
}

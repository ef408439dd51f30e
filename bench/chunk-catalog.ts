/**
 * Chunk catalog calls at the batch size blob commits use (4096 digests):
 * PostgreSQL (postgres-chunk-catalog.ts) against SQLite (sqlite-chunk-catalog.ts,
 * the local store's index) measured in the same run, over the real chunk
 * digests of the given images (FastCDC, default parameters).
 *
 *   npx tsx bench/chunk-catalog.ts IMAGE... [--postgres URL] [--batch 4096] [--rounds 3] [--json]
 *
 * PostgreSQL: --postgres, else SNAPYARD_TEST_POSTGRES, else a throwaway server
 * started with scripts/services/pg-up.sh (stopped at the end). Each round uses
 * a fresh SQLite file and a fresh PostgreSQL schema. Timed: only the catalog
 * calls (chunking and hashing the images is done first). Per call kind, the
 * median ms per call over every call of every round, PostgreSQL's ratio to
 * SQLite, its round trips per call, and a `SELECT 1` round trip for scale.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import type { ChunkCatalog, NewCatalogEntry } from '../storage/chunks/chunk-catalog.js';
import { chunkStream } from '../storage/blobs/fastcdc.js';
import { openPostgresChunkCatalog, type PostgresChunkCatalog } from '../storage/chunks/postgres-chunk-catalog.js';
import { SqliteChunkCatalog } from '../storage/chunks/sqlite-chunk-catalog.js';
import { SERVICES, startService, stopService } from '../test/helpers/service-scripts.js';
import { freshSchema } from './lib.js';

const { values: opts, positionals: images } = parseArgs({
  allowPositionals: true,
  options: { postgres: { type: 'string' }, batch: { type: 'string', default: '4096' }, rounds: { type: 'string', default: '3' }, json: { type: 'boolean', default: false } },
});
if (images.length === 0) {
  console.error('usage: npx tsx bench/chunk-catalog.ts IMAGE... [--postgres URL] [--batch 4096] [--rounds 3] [--json]');
  process.exit(2);
}
const BATCH = Number(opts.batch);
const ROUNDS = Number(opts.rounds);
const PACK_BYTES = 256 * 1024 * 1024;
const log = (s: string) => process.stderr.write(`${s}\n`);

/** Distinct chunks of the images, as a writer would record them (packs of 256 MiB). */
async function chunksOf(paths: string[]): Promise<NewCatalogEntry[]> {
  const seen = new Set<string>();
  const out: NewCatalogEntry[] = [];
  let packNo = 0;
  let offset = 0;
  for (const p of paths) {
    for await (const c of chunkStream(createReadStream(p, { highWaterMark: 1 << 20 }), undefined, { copy: false })) {
      const raw = createHash('sha256').update(c.data).digest();
      const k = raw.toString('hex');
      if (seen.has(k)) continue;
      seen.add(k);
      if (offset + c.length > PACK_BYTES) [packNo, offset] = [packNo + 1, 0];
      out.push({ raw, pack: `bench-${packNo}`, offset, length: c.length, rawLength: c.length });
      offset += c.length + 40;
    }
  }
  return out;
}

function batches<T>(xs: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < xs.length; i += BATCH) out.push(xs.slice(i, i + BATCH));
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

type Kind = 'commit new' | 'lookup held' | 'lookup missing' | 'commit touches';
const KINDS: Kind[] = ['commit new', 'lookup held', 'lookup missing', 'commit touches'];

/** Times each call of each kind on a fresh catalog; answers ms per call and (PostgreSQL) round trips per call. */
async function run(c: ChunkCatalog, rows: NewCatalogEntry[], missing: Buffer[]): Promise<{ ms: Record<Kind, number[]>; trips: Record<Kind, number> }> {
  const ms = Object.fromEntries(KINDS.map((k) => [k, [] as number[]])) as Record<Kind, number[]>;
  const trips = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>;
  const roundTrips = () => (c as Partial<PostgresChunkCatalog>).roundTrips ?? 0;
  const time = async (k: Kind, f: () => Promise<unknown>) => {
    const r0 = roundTrips();
    const t0 = performance.now();
    await f();
    ms[k].push(performance.now() - t0);
    trips[k] += roundTrips() - r0;
  };
  const t = 1_700_000_000_000;
  for (const b of batches(rows)) await time('commit new', () => c.commit(b, [], t));
  for (const b of batches(rows.map((r) => r.raw))) await time('lookup held', () => c.lookup(b));
  for (const b of batches(missing)) await time('lookup missing', () => c.lookup(b));
  for (const b of batches(rows.map((r) => r.raw))) await time('commit touches', () => c.commit([], b, t + 1));
  for (const k of KINDS) trips[k] /= ms[k].length;
  return { ms, trips };
}

async function main(): Promise<void> {
  const scratch = mkdtempSync(join(tmpdir(), 'snapyard-bench-catalog-'));
  let base = opts.postgres ?? process.env.SNAPYARD_TEST_POSTGRES;
  const pgDir = base ? null : join('/var/tmp', `snapyard-bench-pg-${process.pid}`);
  try {
    if (pgDir) base = (await startService(SERVICES.pg, pgDir)).SNAPYARD_TEST_POSTGRES!;
    log(`chunking ${images.join(', ')} ...`);
    const rows = await chunksOf(images);
    const missing = Array.from({ length: rows.length }, () => randomBytes(32));
    log(`${rows.length} distinct chunks: ${Math.ceil(rows.length / BATCH)} calls of up to ${BATCH} per kind and round`);
    const all = { sqlite: { ms: {} as Record<Kind, number[]>, trips: {} as Record<Kind, number> }, postgres: { ms: {} as Record<Kind, number[]>, trips: {} as Record<Kind, number> } };
    const ping: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const lite = SqliteChunkCatalog.open(join(scratch, `index-${round}.db`));
      const s = await run(lite, rows, missing);
      await lite.close();
      const schema = await freshSchema(base!);
      const cat = await openPostgresChunkCatalog(schema.url, { poolSize: 2 });
      const p = await run(cat, rows, missing);
      await cat.close();
      const c = new pg.Client(base);
      await c.connect();
      for (let i = 0; i < 50; i++) {
        const t0 = performance.now();
        await c.query('SELECT 1');
        ping.push(performance.now() - t0);
      }
      await c.end();
      await schema.drop();
      for (const [name, r] of [['sqlite', s], ['postgres', p]] as const) {
        for (const k of KINDS) {
          (all[name].ms[k] ??= []).push(...r.ms[k]);
          all[name].trips[k] = r.trips[k];
        }
      }
    }
    const report = KINDS.map((k) => {
      const sq = median(all.sqlite.ms[k]);
      const pq = median(all.postgres.ms[k]);
      return { kind: k, sqliteMsPerCall: +sq.toFixed(2), postgresMsPerCall: +pq.toFixed(2), ratio: +(pq / sq).toFixed(2), postgresRoundTripsPerCall: all.postgres.trips[k] };
    });
    const pingMs = +median(ping).toFixed(3);
    if (opts.json) console.log(JSON.stringify({ chunks: rows.length, batch: BATCH, rounds: ROUNDS, selectOneMs: pingMs, report }));
    else {
      console.log(`${rows.length} chunks, batches of ${BATCH}, ${ROUNDS} rounds; PostgreSQL SELECT 1: ${pingMs} ms`);
      for (const r of report) {
        console.log(`${r.kind.padEnd(15)} sqlite ${r.sqliteMsPerCall.toFixed(2).padStart(8)} ms/call   postgres ${r.postgresMsPerCall.toFixed(2).padStart(8)} ms/call   ${r.ratio.toFixed(2)}x   ${r.postgresRoundTripsPerCall} round trip(s)/call`);
      }
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    if (pgDir) await stopService(SERVICES.pg, pgDir);
  }
}

await main();

/**
 * Issue 12's "flat while 50 clients pull different versions at once": one
 * `snapyard serve` holding every version of the corpus (`snapyard push` of
 * base-v1, games-v1, games-v2, productivity-v1), then --clients concurrent
 * clients for --seconds, each alternating between a full GET of one version's
 * blob (body read and discarded) and a delta pull of another (the server's
 * plan, then every chunk the target has and the held version lacks, 64 per
 * `_chunks` call), each client starting at a different version. The server's
 * RSS is read from /proc every second.
 *
 *   npx tsx bench/many-pulls.ts CORPUS_DIR [--clients 50] [--seconds 180] [--s3] [--json]
 *
 * --s3: the server keeps its chunks in S3 (Ceph RGW) and its metadata in
 * PostgreSQL (SNAPYARD_TEST_S3 / SNAPYARD_TEST_POSTGRES, else throwaway ones
 * from scripts/services), as bench/scale-out.ts does.
 *
 * Prints the server's peak RSS (VmHWM: the pushes included) and during the
 * load, RSS at the end of the first minute (or of the first third of a
 * shorter run) and at the end, the highest and lowest after minute 1 (flat:
 * within 20%), what the caches held (--cache-memory) at both points, bytes
 * and requests served, errors.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Registry } from '../client/registry.js';
import { remoteIndex } from '../client/remote-index.js';
import { parseRef } from '../client/ref.js';
import { chunkSet } from '../storage/blobs/blob-index.js';
import { BIN, benchServices, freshSchema, rssOf, startServer } from './lib.js';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    clients: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '180' },
    s3: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
  },
});
const dir = positionals[0];
if (!dir) {
  console.error('usage: npx tsx bench/many-pulls.ts CORPUS_DIR [--clients 50] [--seconds 180] [--s3] [--json]');
  process.exit(2);
}
const CLIENTS = Number(opts.clients);
const SECONDS = Number(opts.seconds);
const REPO = 'many/win98';
const log = (s: string) => process.stderr.write(`${s}\n`);
const MB = (n: number) => Math.round(n / 1e5) / 10;

const VERSIONS = ['base-v1', 'games-v1', 'games-v2', 'productivity-v1'].filter((v) => existsSync(join(dir, `win98-${v}.qcow2`)));
/** Delta pulls: target over a held version. */
const PAIRS: Array<[string, string]> = ([['games-v1', 'base-v1'], ['games-v2', 'games-v1'], ['productivity-v1', 'base-v1'], ['games-v2', 'base-v1']] as Array<[string, string]>)
  .filter(([t, h]) => VERSIONS.includes(t) && VERSIONS.includes(h));
if (VERSIONS.length < 2 || PAIRS.length === 0) throw new Error(`${dir}: needs win98-base-v1.qcow2 and at least one of games-v1, games-v2, productivity-v1`);

const work = mkdtempSync(join(tmpdir(), 'snapyard-many-pulls-'));
process.once('exit', () => rmSync(work, { recursive: true, force: true }));

let serverArgs: string[] = [];
let serverEnv: Record<string, string> = {};
let cleanup = async () => {};
if (opts.s3) {
  const services = await benchServices(log);
  const schema = await freshSchema(services.postgres, 'bench_many');
  const u = new URL(services.s3.replace(/^s3:/, 'http:'));
  const q = new URLSearchParams({ endpoint: u.searchParams.get('endpoint')!, region: u.searchParams.get('region') ?? 'us-east-1' });
  serverArgs = ['--store', `s3://${u.hostname}/many-${process.pid}?${q}`, '--metadata', schema.url];
  serverEnv = { AWS_ACCESS_KEY_ID: services.s3Credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: services.s3Credentials.secretAccessKey };
  cleanup = async () => {
    await schema.drop();
    await services.stop();
  };
}
const server = await startServer(join(work, 'data'), serverArgs, serverEnv);
log(`server ${server.url}${opts.s3 ? ' (S3 + PostgreSQL)' : ''}; pushing ${VERSIONS.join(', ')}`);
for (const v of VERSIONS) {
  execFileSync(process.execPath, [BIN, 'push', `${REPO}:${v}`, join(dir, `win98-${v}.qcow2`), '--registry', server.url, '--cache', join(work, 'push-cache')], { stdio: ['ignore', 'ignore', 'inherit'] });
}
const afterPushes = rssOf(server.pid);

// What each client needs: every version's blob, and for each pair the chunks the target has and the held version lacks.
const setupReg = new Registry(server.url);
const blobs = new Map<string, { digest: string; size: number }>();
const held = new Map<string, Set<string>>();
for (const v of VERSIONS) {
  const r = await remoteIndex(setupReg, parseRef(`${REPO}:${v}`), [], () => null);
  blobs.set(v, { digest: r.answer.blob.digest, size: r.answer.blob.size });
  held.set(v, new Set(chunkSet(r.index).keys()));
}
await setupReg.close();
const deltas = PAIRS.map(([target, have]) => ({
  target,
  have,
  missing: [...held.get(target)!].filter((h) => !held.get(have)!.has(h)),
}));
log(`delta pulls: ${deltas.map((d) => `${d.target} over ${d.have} (${d.missing.length} chunks)`).join(', ')}`);

const stats = { fullGets: 0, fullBytes: 0, deltaPulls: 0, deltaBytes: 0, chunkCalls: 0, cutAtEnd: 0, errors: new Map<string, number>() };
const error = (what: string, e: unknown) => {
  const k = `${what}: ${String((e as Error)?.message ?? e).slice(0, 160)}`;
  stats.errors.set(k, (stats.errors.get(k) ?? 0) + 1);
};

/** Server RSS each second, and what its caches hold (snapyard_cache_bytes). */
const samples: Array<{ t: number; rss: number; caches: number }> = [];
async function cacheBytes(): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(/^snapyard_cache_bytes\{[^}]*\} (\S+)$/gm)) sum += Number(m[1]);
  return sum;
}

const t0 = performance.now();
const deadline = t0 + SECONDS * 1000;
const over = () => performance.now() >= deadline;

async function fullGet(reg: Registry, v: string): Promise<void> {
  const b = blobs.get(v)!;
  const res = await reg.request('GET', `/v2/${REPO}/blobs/${b.digest}`);
  if (res.statusCode !== 200) throw new Error(`GET ${v}: HTTP ${res.statusCode}`);
  let n = 0;
  for await (const p of res.body) {
    n += (p as Buffer).byteLength;
    stats.fullBytes += (p as Buffer).byteLength;
    if (over()) break; // cut at the end of the run (the body is destroyed)
  }
  if (n === b.size) stats.fullGets++;
  else if (over()) stats.cutAtEnd++;
  else throw new Error(`GET ${v}: ${n} bytes, expected ${b.size}`);
}

async function deltaPull(reg: Registry, d: (typeof deltas)[number]): Promise<void> {
  const have = [blobs.get(d.have)!.digest];
  const plan = await reg.request('POST', `/snapyard/v1/${REPO}/_delta`, { body: JSON.stringify({ target: d.target, have }), headers: { 'content-type': 'application/json' } });
  if (plan.statusCode !== 200) throw new Error(`_delta ${d.target}: HTTP ${plan.statusCode}`);
  for await (const p of plan.body) stats.deltaBytes += (p as Buffer).byteLength;
  for (let at = 0; at < d.missing.length; at += 64) {
    if (over()) {
      stats.cutAtEnd++;
      return;
    }
    const res = await reg.request('POST', `/snapyard/v1/${REPO}/_chunks`, {
      body: JSON.stringify({ blob: blobs.get(d.target)!.digest, chunks: d.missing.slice(at, at + 64), have }),
      headers: { 'content-type': 'application/json' },
    });
    if (res.statusCode !== 200) throw new Error(`_chunks ${d.target}: HTTP ${res.statusCode}`);
    for await (const p of res.body) stats.deltaBytes += (p as Buffer).byteLength;
    stats.chunkCalls++;
  }
  stats.deltaPulls++;
}

async function client(i: number): Promise<void> {
  const reg = new Registry(server.url, { connections: 1 });
  try {
    for (let round = 0; !over(); round++) {
      try {
        if ((i + round) % 2 === 0) await fullGet(reg, VERSIONS[(i + round) % VERSIONS.length]!);
        else await deltaPull(reg, deltas[(i + round) % deltas.length]!);
      } catch (e) {
        if (!over()) error((i + round) % 2 === 0 ? 'full GET' : 'delta pull', e);
      }
    }
  } finally {
    await reg.close();
  }
}

server.resetPeak();
const sampler = setInterval(() => {
  const t = (performance.now() - t0) / 1000;
  let rss: number;
  try {
    rss = rssOf(server.pid).current;
  } catch {
    return;
  }
  cacheBytes().then((caches) => samples.push({ t, rss, caches }), () => samples.push({ t, rss, caches: NaN }));
}, 1000);
log(`${CLIENTS} clients for ${SECONDS} s`);
await Promise.all(Array.from({ length: CLIENTS }, (_, i) => client(i)));
clearInterval(sampler);
const elapsed = (performance.now() - t0) / 1000;
await new Promise((r) => setTimeout(r, 300));
const vmHwm = rssOf(server.pid).peak;
const loadPeak = server.sampledPeak();
await server.stop();
await cleanup();

samples.sort((a, b) => a.t - b.t);
const mark = Math.min(60, elapsed / 3);
const first = samples.find((x) => x.t >= mark) ?? samples[0]!;
const end = samples[samples.length - 1]!;
const after = samples.filter((x) => x.t >= mark);
const hi = Math.max(...after.map((x) => x.rss));
const lo = Math.min(...after.map((x) => x.rss));
const report = {
  backend: opts.s3 ? 's3+postgres' : 'local',
  clients: CLIENTS,
  seconds: Math.round(elapsed),
  versions: VERSIONS,
  rssAfterPushesMB: MB(afterPushes.current),
  peakRssWholeRunMB: MB(vmHwm),
  peakRssUnderLoadMB: MB(loadPeak),
  rssAtMarkMB: MB(first.rss),
  markSeconds: Math.round(first.t),
  rssAtEndMB: MB(end.rss),
  growthPercent: Math.round(((end.rss - first.rss) / first.rss) * 1000) / 10,
  highAfterMarkMB: MB(hi),
  lowAfterMarkMB: MB(lo),
  spreadPercent: Math.round(((hi - lo) / lo) * 1000) / 10,
  cachesAtMarkMB: MB(first.caches),
  cachesAtEndMB: MB(end.caches),
  fullGets: stats.fullGets,
  fullGetMBps: Math.round(stats.fullBytes / 1e6 / elapsed),
  deltaPulls: stats.deltaPulls,
  chunkCalls: stats.chunkCalls,
  deltaMB: MB(stats.deltaBytes),
  cutAtEnd: stats.cutAtEnd,
  errors: [...stats.errors].map(([k, n]) => `${n}x ${k}`),
  rssEachTenSecondsMB: samples.filter((_, k) => k % 10 === 0).map((x) => MB(x.rss)),
};
if (opts.json) console.log(JSON.stringify(report));
else {
  console.log(`${report.backend}: ${CLIENTS} clients, ${report.seconds} s, versions ${VERSIONS.join(', ')}`);
  console.log(`  server RSS after the pushes ${report.rssAfterPushesMB} MB; peak over the whole run (VmHWM) ${report.peakRssWholeRunMB} MB, under load ${report.peakRssUnderLoadMB} MB (goal < 300 MB)`);
  console.log(`  at ${report.markSeconds} s ${report.rssAtMarkMB} MB -> end ${report.rssAtEndMB} MB (${report.growthPercent}%); after ${report.markSeconds} s between ${report.lowAfterMarkMB} and ${report.highAfterMarkMB} MB (spread ${report.spreadPercent}%, goal within 20%)`);
  console.log(`  caches (--cache-memory) ${report.cachesAtMarkMB} MB -> ${report.cachesAtEndMB} MB`);
  console.log(`  served: ${report.fullGets} full GETs (${report.fullGetMBps} MB/s of blob bytes), ${report.deltaPulls} delta pulls (${report.chunkCalls} _chunks calls, ${report.deltaMB} MB); cut at the end: ${report.cutAtEnd}`);
  console.log(`  errors: ${report.errors.length === 0 ? 0 : report.errors.join('; ')}`);
  console.log(`  RSS every 10 s (MB): ${report.rssEachTenSecondsMB.join(' ')}`);
}

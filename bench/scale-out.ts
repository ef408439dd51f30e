/**
 * Issue 11's figures in one run: the local backend (pack files + SQLite) and
 * S3 (Ceph RGW) + PostgreSQL side by side.
 *
 *   npx tsx bench/scale-out.ts CORPUS_DIR [--pulls 20] [--rounds 1] [--skip-space-back] [--skip-replicas] [--json]
 *
 * CORPUS_DIR: a corpus directory (bash ../shared/corpus/make-corpus.sh);
 * win98-base-v1.qcow2 and win98-games-v2.qcow2 are needed, every *.qcow2 in it
 * is pushed for the space-back figure. RGW and PostgreSQL: SNAPYARD_TEST_S3
 * (+ AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and SNAPYARD_TEST_POSTGRES,
 * else throwaway ones from scripts/services/{rgw,pg}-up.sh (stopped at the
 * end). Each server is `bin/snapyard.js serve` (dist/: `npm run build` first).
 *
 * 1. Push and pull, local vs S3, interleaved, through bench/wire-proxy.ts, a
 *    fresh client cache each: `snapyard push` of base-v1 into an empty
 *    registry, push of games-v2 (for the pull, and a second PostgreSQL
 *    sample), `snapyard pull --overlay` of games-v2 over base-v1 (qemu-img
 *    compare with the original), and one plain GET of base-v1's blob. Times are
 *    the `seconds` the CLI reports (its work, not node's start-up). The S3
 *    server's store endpoint is bench/s3-counting-proxy.ts (requests RGW
 *    receives, by kind, and payload bytes) and its PostgreSQL URL
 *    bench/pg-counting-proxy.ts (Sync + Query messages: round trips).
 * 2. Space back, on both servers: push every other corpus image, remove every
 *    form of games-v2 and productivity-v1 by digest, `gc --grace 0s` (no
 *    session open), verify; stored bytes (pack files / bucket objects) against
 *    the live chunk bytes verify read, goal <= 1.1x live + one pack per writer.
 * 3. Replicas: two new serve processes on the S3 bucket prefix and schema
 *    (RGW and PostgreSQL directly, no counting proxies). --pulls concurrent
 *    plain OCI GETs of base-v1's blob (bench/concurrent-gets.ts, a process of
 *    its own, each GET on its own connection, bodies read and discarded)
 *    through a round-robin proxy in front of one replica, then of both:
 *    aggregate MB/s, ratio (goal >= 1.5x); --rounds alternates them. The same
 *    load on the local server (after its blob GET) is printed for reference.
 * Every serve process's peak RSS (VmHWM) is read before it stops (goal < 300 MB).
 * --skip-space-back leaves out step 2 (the pushes of the rest of the corpus
 * and gc: most of the run's time), for the other figures and the RSS alone;
 * --skip-replicas leaves out step 3 and the local server's concurrent GETs.
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runGc, runVerify } from '../client/maintenance.js';
import { Registry } from '../client/registry.js';
import { PACK_MAX } from '../storage/chunks/pack-files.js';
import { S3PackDriver } from '../storage/chunks/s3-pack-driver.js';
import { cliBuildNote, runCli, type CliRun } from './delta-cli.js';
import { ROOT, benchServices, corpusImages, cpuSeconds, freshSchema, machineCpu, need, packDirBytes, removeByDigest, rssOf, startServer, tagOf, type ServerProc } from './lib.js';
import { startPgCountingProxy, type PgCountingProxy } from './pg-counting-proxy.js';
import { startS3CountingProxy, type S3Counts, type S3CountingProxy } from './s3-counting-proxy.js';
import { printReport, type Backend, type PushPullStep, type ReplicaRun, type Report, type SpaceBack } from './scale-out-report.js';
import { startHttpProxy, type HttpProxy } from './http-proxy.js';
import { startWireProxy, type WireProxy } from './wire-proxy.js';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: { pulls: { type: 'string', default: '20' }, rounds: { type: 'string', default: '1' }, 'skip-space-back': { type: 'boolean', default: false }, 'skip-replicas': { type: 'boolean', default: false }, json: { type: 'boolean', default: false } },
});
const dir = positionals[0];
if (!dir) {
  console.error('usage: npx tsx bench/scale-out.ts CORPUS_DIR [--pulls 20] [--rounds 1] [--skip-space-back] [--skip-replicas] [--json]');
  process.exit(2);
}
const PULLS = Number(opts.pulls);
const ROUNDS = Number(opts.rounds);
const REPO = 'win98';
/** The S3 store's segment size (RemoteChunkStore's default): its "one pack per writer". */
const S3_SEGMENT = 64 * 1024 * 1024;
const REMOVE = ['games-v2', 'productivity-v1'];
const log = (s: string) => process.stderr.write(`${s}\n`);
need('qemu-img', 'qemu-utils');
const build = cliBuildNote();
if (build.warning) log(`WARNING: ${build.warning}`);

const img = { base: join(dir, 'win98-base-v1.qcow2'), g2: join(dir, 'win98-games-v2.qcow2') };
const work = mkdtempSync(join(tmpdir(), 'snapyard-scale-out-'));
process.once('exit', () => rmSync(work, { recursive: true, force: true }));
let n = 0;
const fresh = (name: string) => {
  const d = join(work, `${name}-${n++}`);
  mkdirSync(d, { recursive: true });
  return d;
};

/** s3://BUCKET/PREFIX?endpoint=ENDPOINT&region=R from the services' s3://BUCKET?endpoint=...&region=R. */
function storeUrl(s3: string, prefix: string, endpoint?: string): string {
  const u = new URL(s3.replace(/^s3:/, 'http:'));
  const q = new URLSearchParams({ endpoint: endpoint ?? u.searchParams.get('endpoint')!, region: u.searchParams.get('region') ?? 'us-east-1' });
  return `s3://${u.hostname}/${prefix}?${q}`;
}

/** A request's route with the repository, digests and upload ids taken out: "POST /snapyard/v1/R/_commit". */
function routeOf(method: string, url: string): string {
  const path = url.split('?')[0]!
    .replace(/^\/v2\/.+?\/(blobs|manifests)\//, '/v2/R/$1/')
    .replace(/^\/snapyard\/v1\/.+?\/_/, '/snapyard/v1/R/_')
    .replace(/sha256:[0-9a-f]{64}/, 'DIGEST')
    .replace(/uploads\/[^/]+$/, 'uploads/ID');
  return `${method} ${path}`;
}

/** Peak RSS (VmHWM) of a serve process, read before it stops. */
const peaks: Record<string, number> = {};
async function stopServer(name: string, s: ServerProc): Promise<void> {
  try {
    peaks[name] = rssOf(s.pid).peak;
  } catch { /* already gone */ }
  await s.stop();
}

/** A plain GET of a blob through the wire proxy, body read and discarded; seconds. */
async function getBlob(proxy: WireProxy, digest: string, size: number): Promise<number> {
  proxy.reset();
  const t0 = performance.now();
  const r = await fetch(`http://127.0.0.1:${proxy.port}/v2/${REPO}/blobs/${digest}`);
  let bytes = 0;
  for await (const piece of r.body!) bytes += (piece as Uint8Array).byteLength;
  if (bytes !== size) throw new Error(`GET of ${digest}: ${bytes} bytes, expected ${size}`);
  return (performance.now() - t0) / 1000;
}

/** base-v1's layer (the qcow2 blob) and its size. */
async function baseLayer(url: string): Promise<{ digest: string; size: number }> {
  const m = (await (await fetch(`${url}/v2/${REPO}/manifests/base-v1`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } })).json()) as { layers: Array<{ digest: string; size: number }> };
  return m.layers[0]!;
}

/** What bench/concurrent-gets.ts prints. */
interface Gets {
  bytes: number;
  seconds: number;
  each: number[];
  cpuSeconds: number;
}

/**
 * --pulls concurrent GETs of the blob through a round-robin proxy in front of
 * `servers` (bench/concurrent-gets.ts), with the CPU seconds the servers, this
 * process (the proxy), the GETs' process and the machine used meanwhile.
 */
async function concurrentGets(backend: Backend, servers: ServerProc[], round: number, layer: { digest: string; size: number }): Promise<ReplicaRun> {
  const proxy = await startWireProxy(servers.map((x) => x.port));
  try {
    const cpu0 = servers.map((x) => cpuSeconds(x.pid));
    const m0 = machineCpu();
    const self0 = process.cpuUsage();
    const child = spawn(process.execPath, [...process.execArgv, join(ROOT, 'bench', 'concurrent-gets.ts'), `http://127.0.0.1:${proxy.port}/v2/${REPO}/blobs/${layer.digest}`, String(PULLS), String(layer.size)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const code = await new Promise<number | null>((res) => child.once('close', res));
    if (code !== 0) throw new Error(`bench/concurrent-gets.ts exited ${code}`);
    const g = JSON.parse(out) as Gets;
    const self = process.cpuUsage(self0);
    const m1 = machineCpu();
    const cpu = { servers: servers.map((x, i) => cpuSeconds(x.pid) - cpu0[i]!), proxy: (self.user + self.system) / 1e6, client: g.cpuSeconds, machine: m1.busy - m0.busy };
    const run: ReplicaRun = { backend, round, replicas: servers.length, pulls: PULLS, bytes: g.bytes, seconds: g.seconds, slowest: Math.max(...g.each), cpu, machineBusy: cpu.machine / (m1.total - m0.total) };
    log(`round ${round}: ${PULLS} concurrent GETs of base-v1's blob, ${backend}, ${servers.length} server(s): ${(g.bytes / 1e6 / g.seconds).toFixed(1)} MB/s (${g.seconds.toFixed(2)} s; server CPU ${cpu.servers.map((x) => x.toFixed(1)).join(' + ')} s, proxy ${cpu.proxy.toFixed(1)} s, client ${cpu.client.toFixed(1)} s, machine ${cpu.machine.toFixed(1)} s = ${(run.machineBusy * 100).toFixed(0)}% busy)`);
    return run;
  } finally {
    await proxy.close();
  }
}

const services = await benchServices(log);
const prefix = `scale-out-${process.pid}-${randomBytes(4).toString('hex')}`;
const credsEnv = { AWS_ACCESS_KEY_ID: services.s3Credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: services.s3Credentials.secretAccessKey };
const servers: Array<[string, ServerProc]> = [];
const report: Report = { corpus: dir, cli: build.runs, pulls: PULLS, steps: [], spaceBack: [], replicas: [], rss: {} };
let schema: Awaited<ReturnType<typeof freshSchema>> | undefined;
let s3Proxy: S3CountingProxy | undefined;
let pgProxy: PgCountingProxy | undefined;
try {
  schema = await freshSchema(services.postgres, 'bench_scale');
  s3Proxy = await startS3CountingProxy(new URL(services.s3.replace(/^s3:/, 'http:')).searchParams.get('endpoint')!);
  pgProxy = await startPgCountingProxy(schema.url);
  const [s3p, pgp, sch] = [s3Proxy, pgProxy, schema];
  const srv = {} as Record<Backend, ServerProc>;
  let routes: HttpProxy | undefined;
  /** S3 server: requests and PostgreSQL round trips during them, by route, since the last step began. */
  let routeTrips: Record<string, { requests: number; pgRoundTrips: number }> = {};
  const wire = {} as Record<Backend, WireProxy>;
  /** Starts both servers (or again after the pushes: same data directories, empty in-process caches) behind wire proxies; the S3 one on the counting proxies. */
  const startBoth = async () => {
    for (const b of ['local', 's3'] as const) {
      if (srv[b]) {
        await wire[b].close();
        await stopServer(`${b} (push)`, srv[b]);
      }
      srv[b] = b === 'local'
        ? await startServer(join(work, 'local-data'))
        : await startServer(join(work, 's3-data'), ['--store', storeUrl(services.s3, prefix, s3p.endpoint), '--metadata', pgp.urlFor(sch.url)], credsEnv);
      servers.push([b, srv[b]]);
      if (b === 'local') wire[b] = await startWireProxy(srv[b].port);
      else {
        // client -> wire proxy -> HTTP proxy (which request the PostgreSQL round trips happen in) -> server
        await routes?.close();
        routes = await startHttpProxy(srv[b].url, (method, url) => {
          const t0 = pgp.roundTripsSoFar();
          return () => {
            const r = (routeTrips[routeOf(method, url)] ??= { requests: 0, pgRoundTrips: 0 });
            r.requests++;
            r.pgRoundTrips += pgp.roundTripsSoFar() - t0;
          };
        });
        wire[b] = await startWireProxy(routes.port);
      }
    }
  };
  await startBoth();
  /** Runs a CLI step on each backend in turn; S3 requests and PostgreSQL round trips counted on the S3 one. */
  const step = async (name: string, args: () => string[], check?: string): Promise<Record<Backend, CliRun>> => {
    const out = {} as Record<Backend, CliRun>;
    for (const b of ['local', 's3'] as const) {
      s3p.reset();
      pgp.reset();
      routeTrips = {};
      const a = args();
      const r = await runCli(a, wire[b]);
      const s: PushPullStep = { step: name, backend: b, seconds: Number(r.json?.seconds ?? r.seconds), wallSeconds: r.seconds, wireUp: r.wire.up, wireDown: r.wire.down, chunks: r.json?.chunks as number | undefined, newChunks: r.json?.newChunks as number | undefined, size: r.json?.size as number | undefined };
      if (b === 's3') {
        const pgc = pgp.counts();
        const top = Object.entries(pgc.statements).sort((x, y) => y[1] - x[1]).slice(0, 6);
        Object.assign(s, { s3: s3p.counts(), pgRoundTrips: pgc.roundTrips, pgStatements: Object.fromEntries(top), routes: structuredClone(routeTrips) });
      }
      if (check) {
        const o = a[a.indexOf('-o') + 1]!;
        execFileSync('qemu-img', ['compare', '-q', o, check], { stdio: 'inherit' });
        rmSync(o, { force: true });
      }
      report.steps.push(s);
      log(`${name} on ${b}: ${s.seconds.toFixed(2)} s, wire ${(r.wire.up / 1e6).toFixed(2)} MB up ${(r.wire.down / 1e6).toFixed(2)} MB down${s.s3 ? `, S3 ${JSON.stringify(s.s3.requests)}, PostgreSQL ${s.pgRoundTrips} round trips` : ''}`);
      out[b] = r;
    }
    return out;
  };

  // 1. Push and pull.
  await step('push base-v1', () => ['push', `${REPO}:base-v1`, img.base, '--json', '--cache', fresh('cache')]);
  await step('push games-v2', () => ['push', `${REPO}:games-v2`, img.g2, '--json', '--cache', fresh('cache')]);
  // Pulls from servers started again: what they read comes from the store, not from what the push left in memory.
  await startBoth();
  await step('overlay pull games-v2', () => ['pull', `${REPO}:games-v2`, '-o', join(fresh('out'), 'g2.qcow2'), '--overlay', '--base', img.base, '--cache', fresh('cache'), '--json'], img.g2);
  const layer = await baseLayer(srv.local.url);
  for (const b of ['local', 's3'] as const) {
    s3p.reset();
    const seconds = await getBlob(wire[b], layer.digest, layer.size);
    const w = wire[b].counts();
    report.steps.push({ step: 'GET base-v1 blob', backend: b, seconds, wallSeconds: seconds, wireUp: w.up, wireDown: w.down, size: layer.size, ...(b === 's3' ? { s3: s3p.counts() } : {}) });
    log(`GET base-v1 blob on ${b}: ${seconds.toFixed(2)} s`);
  }
  // The same load on the local server, for reference (its RSS then counts in "local (pull, space back)").
  if (!opts['skip-replicas']) {
    await getBlob(wire.local, layer.digest, layer.size);
    report.replicas.push(await concurrentGets('local', [srv.local], 0, layer));
  }

  // 2. Space back on both (before the replicas: one writer per store, so compaction may rewrite every pack).
  const done = new Set(['base-v1', 'games-v2']);
  const rest = corpusImages(dir).filter((f) => !done.has(tagOf(f)));
  for (const b of opts['skip-space-back'] ? [] : (['local', 's3'] as const)) {
    for (const f of rest) await runCli(['push', `${REPO}:${tagOf(f)}`, join(dir, f), '--json', '--cache', fresh('cache')], wire[b]);
    const gone = corpusImages(dir).map(tagOf).filter((t) => REMOVE.some((r) => t === r || t.startsWith(`${r}-`)));
    await removeByDigest(srv[b].url, REPO, gone);
    s3p.reset();
    const admin = new Registry(srv[b].url, { connections: 1 });
    const gc = await runGc(admin, { graceSeconds: 0 });
    const verify = await runVerify(admin, {});
    await admin.close();
    let stored: { packs: number; bytes: number };
    if (b === 'local') stored = packDirBytes(join(work, 'local-data', 'store', 'packs'));
    else {
      const d = new S3PackDriver({ location: storeUrl(services.s3, prefix), credentials: services.s3Credentials });
      stored = { packs: 0, bytes: 0 };
      for await (const p of d.list()) {
        stored.packs++;
        stored.bytes += p.size;
      }
      await d.close();
    }
    const sb: SpaceBack = {
      backend: b, images: rest.length + done.size, removed: gone, gcSeconds: gc.seconds, chunksFreed: gc.chunks, packsRewritten: gc.packsRewritten, packsDeleted: gc.packsDeleted,
      storedBytes: stored.bytes, packs: stored.packs, liveBytes: verify.storedBytes, verifyOk: verify.ok, packAllowance: b === 'local' ? PACK_MAX : S3_SEGMENT,
      ...(b === 's3' ? { gcS3: s3p.counts() as S3Counts } : {}),
    };
    report.spaceBack.push(sb);
    log(`space back on ${b}: ${rest.length} more images pushed, removed ${gone.join(', ')}, gc ${gc.seconds.toFixed(1)} s; ${(stored.bytes / 1e6).toFixed(1)} MB stored in ${stored.packs} packs for ${(verify.storedBytes / 1e6).toFixed(1)} MB live (verify ok: ${verify.ok})`);
  }
  for (const b of ['local', 's3'] as const) {
    await wire[b].close();
    if (b === 's3') await routes?.close();
    await stopServer(`${b} (pull${opts['skip-space-back'] ? '' : ', space back'})`, srv[b]);
  }

  // 3. Replicas on the S3 store, straight to RGW and PostgreSQL.
  if (!opts['skip-replicas']) {
    const replicaArgs = ['--store', storeUrl(services.s3, prefix), '--metadata', sch.url];
    const r1 = await startServer(join(work, 'replica-1'), replicaArgs, credsEnv);
    servers.push(['replica-1', r1]);
    const r2 = await startServer(join(work, 'replica-2'), replicaArgs, credsEnv);
    servers.push(['replica-2', r2]);
    // Not timed: one GET on each, so neither meets the blob's index for the first time during the figure.
    for (const r of [r1, r2]) {
      const p = await startWireProxy(r.port);
      await getBlob(p, layer.digest, layer.size);
      await p.close();
    }
    for (let round = 0; round < ROUNDS; round++) {
      report.replicas.push(await concurrentGets('s3', [r1], round, layer));
      report.replicas.push(await concurrentGets('s3', [r1, r2], round, layer));
    }
    for (const [name, s] of [['replica-1', r1], ['replica-2', r2]] as const) await stopServer(name, s);
  }
  report.rss = peaks;
  printReport(report, opts.json === true);
} finally {
  for (const [, s] of servers) await s.stop();
  await s3Proxy?.close();
  await pgProxy?.close();
  // Leave nothing in the bucket (RGW's memstore keeps objects in RAM) nor in PostgreSQL.
  const d = new S3PackDriver({ location: storeUrl(services.s3, prefix), credentials: services.s3Credentials });
  const names: string[] = [];
  for await (const p of d.list()) names.push(p.name);
  await d.delete(names).catch(() => {});
  await d.close();
  await schema?.drop().catch(() => {});
  await services.stop();
  rmSync(work, { recursive: true, force: true });
}

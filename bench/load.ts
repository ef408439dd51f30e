/**
 * Issue 8's load benchmark: 100 concurrent clients (delta pulls, ranged blob
 * GETs, manifest GETs) plus 10 concurrent pushes against one `snapyard serve`
 * process for a while, with auth off and with auth on (htpasswd + access
 * file, the clients logging in through the token flow) in the same run.
 * Reports errors, p50/p99 latency per route (as the clients see it, and for
 * manifest GETs as the server timed it, with this process's own event-loop
 * delay beside: 100 clients share one event loop), requests per second, the
 * server's peak RSS and its growth from minute 1 to the end.
 *
 *   npx tsx bench/load.ts BASE.qcow2 TARGET.qcow2 [--seconds 300] [--clients 100] [--pushers 10] [--think-ms 0] [--start spread|together] [--warmup 15] [--pushers-nice 10] [--segment 60] [--only on|off] [--json]
 *
 * Both servers are set up, then loaded in alternating segments of --segment
 * seconds until each had --seconds. --think-ms makes each client pause
 * (0.5x to 1.5x that) between requests, as pods do; 0 is a closed loop.
 * With a think time each client also starts at a random point of its first
 * one (`--start spread`, the default: a fleet's pods are not in step);
 * `--start together` sends every client's first request at the same instant
 * at the start of each segment, a burst of --clients requests.
 * Each server first takes --warmup seconds of the same load, not in the
 * figures (its errors are): the first delta requests of a version build its
 * index difference and sketch table and fill the frame cache, once per
 * version, and JIT-compile the server's paths. Its figures are logged.
 * The pushers' process runs at nice --pushers-nice: it stands for build
 * jobs on other machines, and its own chunking and hashing (a whole core
 * of this 2-core machine at nice 0) would otherwise be timed as the
 * server's latency; the pushes the server took are reported beside.
 *
 * BASE and TARGET are two related images (e.g. the corpus's win98-base-v1
 * and win98-games-v1): TARGET is pulled as a delta over BASE.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { Registry } from '../client/registry.js';
import { remoteIndex } from '../client/remote-index.js';
import { parseRef } from '../client/ref.js';
import { chunkSet } from '../storage/blobs/blob-index.js';
import type { Digest } from '../storage/digest.js';
import { BIN, ROOT, rssOf, startServer, type ServerProc } from './lib.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1]! : dflt;
};
const SECONDS = Number(flag('--seconds', '300'));
const CLIENTS = Number(flag('--clients', '100'));
const PUSHERS = Number(flag('--pushers', '10'));
const ONLY = flag('--only', 'both');
const THINK_MS = Number(flag('--think-ms', '0'));
const START = flag('--start', 'spread');
const WARMUP = Number(flag('--warmup', '15'));
const PUSHERS_NICE = flag('--pushers-nice', '10');
const SEGMENT = Number(flag('--segment', '60'));
const JSON_OUT = args.includes('--json') && args.splice(args.indexOf('--json'), 1).length > 0;
const [BASE, TARGET] = args;
if (!BASE || !TARGET) {
  console.error('usage: npx tsx bench/load.ts BASE.qcow2 TARGET.qcow2 [--seconds N] [--clients N] [--pushers N] [--only on|off] [--json]');
  process.exit(2);
}
const REPO = 'load/win98';
const log = (s: string) => process.stderr.write(`${s}\n`);

interface Sample {
  route: string;
  ms: number;
  ok: boolean;
}

class Recorder {
  samples: Sample[] = [];
  errors = new Map<string, number>();
  record(route: string, t0: number, ok: boolean, err?: unknown): void {
    this.samples.push({ route, ms: performance.now() - t0, ok });
    if (!ok) {
      const k = `${route}: ${String((err as Error)?.message ?? err).slice(0, 160)}`;
      this.errors.set(k, (this.errors.get(k) ?? 0) + 1);
    }
  }
}

const pct = (xs: number[], p: number) => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

async function setup(server: ServerProc, work: string, creds: string[]): Promise<{ baseBlob: Digest; targetBlob: Digest; baseIndex: Buffer; missing: string[]; size: number }> {
  for (const [tag, file] of [['base', BASE], ['target', TARGET]] as const) {
    execFileSync(process.execPath, [BIN, 'push', `${REPO}:${tag}`, file!, '--registry', server.url, '--cache', join(work, 'setup-cache'), ...creds], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const reg = new Registry(server.url, creds.length ? { creds: { username: 'alice', password: 'alice-pw' } } : {});
  const base = await remoteIndex(reg, parseRef(`${REPO}:base`), [], () => null);
  const target = await remoteIndex(reg, parseRef(`${REPO}:target`), [], () => null);
  await reg.close();
  const have = chunkSet(base.index);
  const missing = [...chunkSet(target.index).keys()].filter((h) => !have.has(h));
  return { baseBlob: base.answer.blob.digest, targetBlob: target.answer.blob.digest, baseIndex: base.bytes, missing, size: target.answer.blob.size };
}

interface Env {
  auth: boolean;
  server: ServerProc;
  work: string;
  s: Awaited<ReturnType<typeof setup>>;
  creds: { username: string; password: string } | null;
  pullCreds: { creds?: { username: string; password: string } };
  rec: Recorder;
  /** Server RSS each second, and the bytes its caches hold then (the snapyard_cache_bytes gauges, within --cache-memory). */
  rss: Array<{ t: number; rss: number; caches: number; heap: number; external: number }>;
  activeSeconds: number;
  /** This process's event-loop delay while loading this server: the harness's share of the latencies it records. */
  harnessDelay: IntervalHistogram;
  rounds: number[];
  /** One client each, kept across segments as a pod keeps its client (a new one per segment put 100 logins at each segment's start). */
  registries: Registry[];
}

async function prepare(auth: boolean): Promise<Env> {
  const work = mkdtempSync(join(tmpdir(), `snapyard-load-${auth ? 'on' : 'off'}-`));
  const extra: string[] = [];
  let creds: { username: string; password: string } | null = null;
  if (auth) {
    execFileSync(process.execPath, [BIN, 'passwd', join(work, 'htpasswd'), 'alice'], { input: 'alice-pw\n', stdio: ['pipe', 'ignore', 'inherit'] });
    execFileSync(process.execPath, [BIN, 'passwd', join(work, 'htpasswd'), 'puller'], { input: 'puller-pw\n', stdio: ['pipe', 'ignore', 'inherit'] });
    writeFileSync(join(work, 'access.yaml'), 'rules:\n  - users: [alice]\n    repositories: ["*"]\n    actions: [pull, push, delete, admin]\n  - users: [puller]\n    repositories: ["load/*"]\n    actions: [pull]\n');
    extra.push('--htpasswd', join(work, 'htpasswd'), '--access', join(work, 'access.yaml'));
    creds = { username: 'alice', password: 'alice-pw' };
  }
  const server = await startServer(join(work, 'data'), extra);
  const s = await setup(server, work, auth ? ['--creds', 'alice:alice-pw'] : []);
  log(`[auth ${auth ? 'on' : 'off'}] set up: ${s.missing.length} chunks differ`);
  return { auth, server, work, s, creds, pullCreds: auth ? { creds: { username: 'puller', password: 'puller-pw' } } : {}, rec: new Recorder(), rss: [], activeSeconds: 0, harnessDelay: monitorEventLoopDelay({ resolution: 10 }), rounds: Array(PUSHERS).fill(0), registries: [] };
}

/**
 * Starts the pushers' process (bench/load-pushers.ts: a process of their own, as build jobs are, so their
 * chunking and hashing do not stall the event loop that times the other clients) and waits until it is ready: its start-up (node, tsx
 * compiling, the seed file read) is the harness's, not load, and is kept out of the timed segment. Its pushers
 * run when `go` is called.
 */
async function startPushers(env: Env, seconds: number): Promise<{ go(): void; done: Promise<void> }> {
  if (PUSHERS === 0) return { go() {}, done: Promise.resolve() };
  const args = [join(ROOT, 'bench', 'load-pushers.ts'), env.server.url, String(seconds), String(PUSHERS), BASE!, env.work, String(env.rounds[0]!), ...(env.creds ? [`${env.creds.username}:${env.creds.password}`] : [])];
  env.rounds[0]! += 1000;
  const child = spawn('nice', ['-n', PUSHERS_NICE, process.execPath, '--import', 'tsx', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  let readyNow: () => void = () => {};
  const ready = new Promise<void>((r) => (readyNow = r));
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.startsWith('ready\n')) readyNow();
  });
  const done = new Promise<void>((resolve, reject) => {
    // 'close', not 'exit': the pushers' JSON (~1 MB after a 900 s run) may still be in the pipe at exit.
    child.on('close', (code) => {
      readyNow();
      if (code !== 0) return reject(new Error(`load-pushers exited ${code}`));
      const r = JSON.parse(out.slice(out.indexOf('\n') + 1)) as { samples: Array<{ ms: number; ok: boolean }>; errors: Record<string, number> };
      for (const x of r.samples) env.rec.samples.push({ route: 'push (4 MiB, 64 KiB new)', ms: x.ms, ok: x.ok });
      for (const [k, v] of Object.entries(r.errors)) env.rec.errors.set(`push: ${k}`, (env.rec.errors.get(`push: ${k}`) ?? 0) + v);
      resolve();
    });
  });
  await ready;
  return { go: () => child.stdin.end('go\n'), done };
}

/** Runs the clients and pushers against one server for `seconds`, adding to its records. */
async function segment(env: Env, seconds: number): Promise<void> {
  const { server, s, rec } = env;
  const pushing = await startPushers(env, seconds);
  const deadline = performance.now() + seconds * 1000;
  let rng = 12345 + Math.floor(env.activeSeconds);
  const rand = (n: number) => {
    rng = (rng * 1103515245 + 12345) >>> 0;
    return rng % n;
  };
  const think = () => (THINK_MS > 0 ? new Promise((r) => setTimeout(r, THINK_MS * (0.5 + Math.random()))) : Promise.resolve());
  const timed = async (route: string, fn: () => Promise<void>) => {
    const t0 = performance.now();
    try {
      await fn();
      rec.record(route, t0, true);
    } catch (e) {
      rec.record(route, t0, false, e);
    }
  };
  const client = async (i: number) => {
    const reg = (env.registries[i] ??= new Registry(server.url, { connections: 2, ...env.pullCreds }));
    // A fleet's pods are not in step: each client starts at a random point of its first think time.
    if (START === 'spread' && THINK_MS > 0) await new Promise((r) => setTimeout(r, THINK_MS * Math.random()));
    while (performance.now() < deadline) {
      const r = rand(10);
      if (r < 5) {
        await timed('manifest.get', async () => {
          await reg.getManifest(REPO, i % 2 ? 'target' : 'base');
        });
      } else if (r < 8) {
        await timed('blob.get (1 MiB range)', async () => {
          const start = rand(Math.max(1, s.size - (1 << 20)));
          const res = await reg.request('GET', `/v2/${REPO}/blobs/${s.targetBlob}`, { headers: { range: `bytes=${start}-${start + (1 << 20) - 1}` } });
          let n = 0;
          for await (const p of res.body) n += (p as Buffer).length;
          if (n !== 1 << 20) throw new Error(`range returned ${n} bytes`);
        });
      } else {
        // The server's whole plan; the client only drains it (decoding a 1 GB image's index per request
        // would make this process, not the server, the bottleneck).
        await timed('delta.plan', async () => {
          const res = await reg.request('POST', `/snapyard/v1/${REPO}/_delta`, { body: JSON.stringify({ target: 'target', have: [s.baseBlob] }), headers: { 'content-type': 'application/json' } });
          await res.body.dump();
        });
        await timed('delta.chunks (<=4 MiB)', async () => {
          const at = rand(Math.max(1, s.missing.length - 64));
          const res = await reg.request('POST', `/snapyard/v1/${REPO}/_chunks`, {
            body: JSON.stringify({ blob: s.targetBlob, chunks: s.missing.slice(at, at + 64), have: [s.baseBlob] }),
            headers: { 'content-type': 'application/json' },
          });
          for await (const _ of res.body) { /* drain */ }
        });
      }
      await think();
    }
  };
  const base = env.activeSeconds;
  const t0 = performance.now();
  const sampler = setInterval(() => {
    const t = base + (performance.now() - t0) / 1000;
    let rss: number;
    try {
      rss = rssOf(server.pid).current;
    } catch {
      return; // exited
    }
    memory(server.url).then((m) => env.rss.push({ t, rss, ...m }), () => env.rss.push({ t, rss, caches: NaN, heap: NaN, external: NaN }));
  }, 1000);
  pushing.go();
  env.harnessDelay.enable();
  await Promise.all([...Array.from({ length: CLIENTS }, (_, i) => client(i)), pushing.done]);
  env.harnessDelay.disable();
  clearInterval(sampler);
  env.activeSeconds += (performance.now() - t0) / 1000;
}

/** What the server's caches hold (the sum of its snapyard_cache_bytes gauges), its V8 heap in use and its external (Buffer) memory. */
async function memory(url: string): Promise<{ caches: number; heap: number; external: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let caches = 0;
  for (const m of text.matchAll(/^snapyard_cache_bytes\{[^}]*\} (\S+)$/gm)) caches += Number(m[1]);
  const one = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { caches, heap: one('nodejs_heap_size_used_bytes'), external: one('nodejs_external_memory_bytes') };
}

/**
 * The server's own view of manifest GETs (its request-duration histogram: from the request's arrival to
 * the response's end, no client queueing): the share answered within 100 ms, and the bucket holding the 99th percentile.
 */
async function serverSide(url: string): Promise<{ within100ms: number; p99Bucket: string }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const buckets: Array<[number, number]> = [];
  for (const m of text.matchAll(/^snapyard_http_request_duration_seconds_bucket\{([^}]*)\} (\S+)$/gm)) {
    if (!/route="manifest\.get"/.test(m[1]!) || !/method="GET"/.test(m[1]!)) continue;
    const le = /le="([^"]+)"/.exec(m[1]!)![1]!;
    buckets.push([le === '+Inf' ? Infinity : Number(le), Number(m[2])]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets[buckets.length - 1]?.[1] ?? 0;
  const at100 = buckets.find(([le]) => le >= 0.1)?.[1] ?? 0;
  const i = buckets.findIndex(([, n]) => n >= total * 0.99);
  const lo = i > 0 ? buckets[i - 1]![0] * 1000 : 0;
  const hi = i >= 0 ? buckets[i]![0] * 1000 : NaN;
  return { within100ms: total > 0 ? Math.round((at100 / total) * 10000) / 100 : NaN, p99Bucket: `${lo}-${hi} ms` };
}

async function finish(env: Env): Promise<Record<string, unknown>> {
  const { rec, rss } = env;
  const peak = rssOf(env.server.pid).peak;
  const server = await serverSide(env.server.url);
  await Promise.all(env.registries.map((r) => r.close()));
  await env.server.stop();
  rmSync(env.work, { recursive: true, force: true });
  const routes: Record<string, { n: number; errors: number; p50: number; p99: number }> = {};
  for (const name of [...new Set(rec.samples.map((x) => x.route))]) {
    const xs = rec.samples.filter((x) => x.route === name);
    const ms = xs.filter((x) => x.ok).map((x) => x.ms);
    routes[name] = { n: xs.length, errors: xs.filter((x) => !x.ok).length, p50: Math.round(pct(ms, 50) * 10) / 10, p99: Math.round(pct(ms, 99) * 10) / 10 };
  }
  const elapsed = env.activeSeconds;
  rss.sort((a, b) => a.t - b.t);
  // Minute 1 is its last sample (t < 60 s), taken under load like the end's: the first sample at or after
  // 60 s opens this server's second segment, after it sat idle while the other server was loaded.
  const lastBefore = (sec: number) => rss.findLast((x) => x.t < sec) ?? rss[0];
  const m1 = Math.min(60, elapsed / 5);
  const first = lastBefore(m1);
  const end = rss[rss.length - 1];
  const minute1 = first?.rss ?? 0;
  const last = end?.rss ?? 0;
  // The growth that is not the caches filling up to their budget (a leak would show here).
  const lessCaches = (x: typeof first) => (x ? x.rss - x.caches : 0);
  // One sample swings +-20 MB within seconds (V8 committing and releasing pages around its GCs, the
  // response buffers in flight), so the growth figure compares the median of the 15 s before minute 1
  // with the median of the last 15 s; the single samples are reported beside it.
  const medianIn = (from: number, to: number) => {
    const xs = rss.filter((x) => x.t >= from && x.t < to).map((x) => x.rss).sort((a, b) => a - b);
    return xs.length ? xs[Math.floor(xs.length / 2)]! : 0;
  };
  const med1 = medianIn(m1 - 15, m1);
  const medEnd = medianIn(elapsed - 15, elapsed + 1);
  return {
    auth: env.auth,
    seconds: Math.round(elapsed),
    requests: rec.samples.length,
    rps: Math.round((rec.samples.length / elapsed) * 10) / 10,
    errors: [...rec.errors].map(([k, n]) => `${n}x ${k}`),
    routes,
    serverManifestGet: server,
    harnessDelayMs: { p50: Math.round(env.harnessDelay.percentile(50) / 1e4) / 100, p99: Math.round(env.harnessDelay.percentile(99) / 1e4) / 100 },
    serverPeakRssMB: Math.round(peak / 1e6),
    rssAtMinute1MB: Math.round(minute1 / 1e6),
    rssAtEndMB: Math.round(last / 1e6),
    rssGrowth: med1 > 0 ? Math.round(((medEnd - med1) / med1) * 1000) / 10 : null,
    rssMedianMinute1MB: Math.round(med1 / 1e6),
    rssMedianEndMB: Math.round(medEnd / 1e6),
    rssSampleGrowth: minute1 > 0 ? Math.round(((last - minute1) / minute1) * 1000) / 10 : null,
    cachesAtMinute1MB: Math.round((first?.caches ?? 0) / 1e6),
    cachesAtEndMB: Math.round((end?.caches ?? 0) / 1e6),
    // Each minute's last sample, to tell a leak (a steady climb) from a store that is still warming.
    byMinute: Array.from({ length: Math.ceil(elapsed / 60) }, (_, i) => lastBefore(Math.min((i + 1) * 60, elapsed + 1))).map((x) => ({
      rss: Math.round((x?.rss ?? 0) / 1e6), heap: Math.round((x?.heap ?? 0) / 1e6), external: Math.round((x?.external ?? 0) / 1e6), caches: Math.round((x?.caches ?? 0) / 1e6),
    })),
    rssLessCachesGrowth: lessCaches(first) > 0 ? Math.round(((lessCaches(end) - lessCaches(first)) / lessCaches(first)) * 1000) / 10 : null,
  };
}

// Both servers are set up first, then loaded in alternating segments (auth off, auth on, ...), so a busy
// moment of this shared machine weighs on both alike.
const modes = ONLY === 'on' ? [true] : ONLY === 'off' ? [false] : [false, true];
const envs: Env[] = [];
for (const m of modes) envs.push(await prepare(m));
if (WARMUP > 0) {
  for (const e of envs) {
    const { rec, rss } = e;
    e.rec = new Recorder();
    e.rss = [];
    await segment(e, WARMUP);
    const warm = e.rec;
    for (const [k, n] of warm.errors) rec.errors.set(`warm-up: ${k}`, n);
    const m = warm.samples.filter((x) => x.route === 'manifest.get').map((x) => x.ms);
    log(`[auth ${e.auth ? 'on' : 'off'}] warm-up (${WARMUP} s, not in the figures): ${warm.samples.length} requests, ${warm.errors.size} kinds of error, manifest.get p50 ${pct(m, 50).toFixed(1)} ms p99 ${pct(m, 99).toFixed(1)} ms`);
    Object.assign(e, { rec, rss, activeSeconds: 0 });
    e.harnessDelay.reset();
  }
}
log(`running ${CLIENTS} clients + ${PUSHERS} pushers (nice ${PUSHERS_NICE})${THINK_MS ? ` (think ${THINK_MS} ms)` : ''} for ${SECONDS} s per server, in segments of ${SEGMENT} s`);
for (let done = 0; done < SECONDS; done += SEGMENT) {
  const order = (done / SEGMENT) % 2 === 0 ? envs : [...envs].reverse();
  for (const e of order) await segment(e, Math.min(SEGMENT, SECONDS - done));
  log(`  ${Math.min(SECONDS, done + SEGMENT)} s of ${SECONDS}`);
}
const results: Array<Record<string, unknown>> = [];
for (const e of envs) results.push(await finish(e));

if (JSON_OUT) console.log(JSON.stringify(results));
for (const r of results) {
  console.log(`\n== auth ${r.auth ? 'on' : 'off'}: ${r.requests} requests in ${r.seconds} s = ${r.rps} req/s; errors: ${(r.errors as string[]).length === 0 ? 0 : (r.errors as string[]).join('; ')}`);
  console.log(`   server RSS: peak ${r.serverPeakRssMB} MB; minute 1 -> end (median of the 15 s before each) ${r.rssMedianMinute1MB} MB -> ${r.rssMedianEndMB} MB: growth ${r.rssGrowth}%`);
  console.log(`   (single samples: minute 1 ${r.rssAtMinute1MB} MB -> end ${r.rssAtEndMB} MB, ${r.rssSampleGrowth}%)`);
  console.log(`   of which caches (--cache-memory): ${r.cachesAtMinute1MB} MB -> ${r.cachesAtEndMB} MB; RSS less caches grew ${r.rssLessCachesGrowth}%`);
  const bm = r.byMinute as Array<{ rss: number; heap: number; external: number; caches: number }>;
  console.log(`   by minute (MB): RSS ${bm.map((x) => x.rss).join(' ')}; V8 heap used ${bm.map((x) => x.heap).join(' ')}; external ${bm.map((x) => x.external).join(' ')}; caches ${bm.map((x) => x.caches).join(' ')}`);
  for (const [name, x] of Object.entries(r.routes as Record<string, { n: number; errors: number; p50: number; p99: number }>)) {
    console.log(`   ${name.padEnd(28)} n=${String(x.n).padStart(6)} (${(x.n / (r.seconds as number)).toFixed(1).padStart(5)}/s)  errors=${x.errors}  p50=${x.p50} ms  p99=${x.p99} ms`);
  }
  const sv = r.serverManifestGet as { within100ms: number; p99Bucket: string };
  const hd = r.harnessDelayMs as { p50: number; p99: number };
  console.log(`   manifest GET as the server timed it: ${sv.within100ms}% within 100 ms, p99 in ${sv.p99Bucket}`);
  console.log(`   this harness's own event-loop delay (part of every latency above): p50 ${hd.p50} ms, p99 ${hd.p99} ms (timer intervals at 10 ms resolution: 10 ms is no delay)`);
}
if (results.length === 2) console.log(`\nreq/s with auth on / off: ${((results[1]!.rps as number) / (results[0]!.rps as number)).toFixed(3)}`);

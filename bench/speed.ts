/**
 * Issue 12's figures, each against its reference in the same run:
 *
 *   npx tsx bench/speed.ts CORPUS_DIR [--runs 3] [--ranges 64] [--only push,get,pull,update] [--json]
 *
 * CORPUS_DIR holds win98-base-v1, win98-games-v1 and win98-games-v2 `.qcow2`
 * (bash ../shared/corpus/make-corpus.sh DIR --size bench). Per run, on a fresh
 * server (`snapyard serve`, its own process):
 *   1. push: `snapyard push` of base-v1 into the empty registry against
 *      `casync make` (zstd, 16/64/256 KiB chunks) of the same file, and
 *      `zstd -3 -T0` for scale; stored bytes (the data directory's packs)
 *      against the casync store's.
 *   2. GET: the blob of games-v2 (pushed after base-v1 and games-v1) read whole
 *      by an HTTP client in this process, from a server just started on the
 *      data (cold: nothing in its caches) and again (warm), and --ranges
 *      random 16 MiB Range requests; against node:http streaming the plain
 *      file (bench/plain-file-server.ts), same reads, same order.
 *   3. full pull: `snapyard pull` of games-v2 with no base and an empty cache
 *      against `curl` of the same image zstd-compressed (`zstd -3 -T0`, made
 *      before the clock) from the plain file server, piped into `zstd -d`.
 *   4. variant update: `pull --overlay --base base-v1` of games-v2 with the
 *      cache holding games-v1 (pulled the same way before the clock): the
 *      process's wall time and the phases SNAPYARD_TRACE prints.
 *   5. the server's peak RSS (VmHWM) over the run.
 * --only runs the steps named (the images are pushed untimed when push is
 * not one of them). Times are best of --runs for each side; ratios are reference time /
 * snapyard time (higher is better for snapyard). CLI times are whole
 * processes (node start-up included, as a build job or pod sees them), and
 * the CLI's own `seconds` is printed beside.
 */
import { execFileSync, fork, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { BIN, MB, duBytes, need, packDirBytes, startServer, timedCmd } from './lib.js';

const args = process.argv.slice(2);
const dir = args.find((a) => !a.startsWith('--'));
if (!dir) {
  console.error('usage: npx tsx bench/speed.ts CORPUS_DIR [--runs 3] [--ranges 64] [--only push,get,pull,update] [--json]');
  process.exit(2);
}
const opt = (name: string, def: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const RUNS = opt('--runs', 3);
const RANGES = opt('--ranges', 64);
const JSON_OUT = args.includes('--json');
const only = args.indexOf('--only');
const STEPS = only >= 0 ? new Set(args[only + 1]!.split(',')) : null;
const step = (name: 'push' | 'get' | 'pull' | 'update') => STEPS === null || STEPS.has(name);
const log = (s: string) => (JSON_OUT ? console.error(s) : console.log(s));
need('casync', 'casync');
need('zstd', 'zstd');
need('curl', 'curl');

const img = (t: string) => join(dir, `win98-${t}.qcow2`);
const base = img('base-v1');
const g1 = img('games-v1');
const g2 = img('games-v2');
const g2Size = statSync(g2).size;

interface CliRun { wall: number; json: Record<string, unknown>; stderr: string }

/** One snapyard command as its own process: wall time, its --json answer, and its stderr (SNAPYARD_TRACE lines). */
function cli(argv: string[], registry: string, env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...argv, '--registry', registry, '--insecure', '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.once('close', (code) => {
      const wall = (performance.now() - t0) / 1000;
      if (code !== 0) return reject(new Error(`snapyard ${argv.join(' ')} exited ${code}: ${err.slice(-2000)}`));
      const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop() ?? '{}';
      resolve({ wall, json: JSON.parse(line) as Record<string, unknown>, stderr: err });
    });
  });
}

/** Reads a URL (optionally a range) to the end, counting bytes; seconds. */
async function readAll(url: string, range?: [number, number]): Promise<number> {
  const t0 = performance.now();
  const res = await request(url, range ? { headers: { range: `bytes=${range[0]}-${range[1]}` } } : {});
  let n = 0;
  for await (const p of res.body) n += (p as Buffer).byteLength;
  const want = range ? range[1] - range[0] + 1 : g2Size;
  if (n !== want) throw new Error(`${url}: ${n} bytes, expected ${want}`);
  return (performance.now() - t0) / 1000;
}

const best: Record<string, number> = {};
const runsOf: Record<string, number[]> = {};
const note = (k: string, s: number) => {
  best[k] = Math.min(best[k] ?? Infinity, s);
  (runsOf[k] ??= []).push(s);
};
const extra: Record<string, unknown> = {};
let serverPeak = 0;

// Ranges: the same random 16 MiB windows for both servers.
let seed = 7;
const rand = (n: number) => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed % n;
};
const RANGE = 16 * 1024 * 1024;
const ranges: Array<[number, number]> = Array.from({ length: RANGES }, () => {
  const s = rand(g2Size - RANGE);
  return [s, s + RANGE - 1];
});

// The reference's files: games-v2 compressed once, before any clock.
const refDir = mkdtempSync(join(tmpdir(), 'snapyard-speed-ref-'));
const zst = join(refDir, 'win98-games-v2.qcow2.zst');
execFileSync('zstd', ['-3', '-T0', '-q', '-f', g2, '-o', zst]);
const plainFile = fork(join(import.meta.dirname, 'plain-file-server.ts'), [g2], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
const plainZst = fork(join(import.meta.dirname, 'plain-file-server.ts'), [zst], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
const portOf = (p: ReturnType<typeof fork>) => new Promise<number>((res) => p.once('message', (m) => res(Number(m))));
const [plainPort, zstPort] = await Promise.all([portOf(plainFile), portOf(plainZst)]);

try {
  for (let run = 1; run <= RUNS; run++) {
    const tmp = mkdtempSync(join(tmpdir(), 'snapyard-speed-'));
    try {
      const data = join(tmp, 'data');
      let srv = await startServer(data);
      // 1. push of a new base, against casync make and zstd.
      // An empty client cache of its own: the push chunks and hashes the file as casync does (no remembered index).
      const push = await cli(['push', 'bench/win98:base-v1', base, '--cache', join(tmp, 'cache-push')], srv.url);
      if (step('push')) {
        note('snapyard push base-v1', push.wall);
        note('snapyard push base-v1 (its own seconds)', Number(push.json.seconds));
        const castr = join(tmp, 'castr');
        note('casync make base-v1', timedCmd('casync', ['make', '--compression=zstd', '--chunk-size=16384:65536:262144', `--store=${castr}`, join(tmp, 'x.caibx'), base]));
        note('zstd -3 -T0 base-v1', timedCmd('zstd', ['-3', '-T0', '-q', '-f', base, '-o', join(tmp, 'x.zst')]));
        extra.storedPush = packDirBytes(join(data, 'store', 'packs')).bytes;
        extra.storedCasync = duBytes(castr);
        rmSync(join(tmp, 'x.zst'), { force: true });
      }
      // Setup for the rest (untimed): games-v1 and games-v2.
      await cli(['push', 'bench/win98:games-v1', g1], srv.url);
      // games-v2 as a build job holding games-v1 pushes it (--seed): its bytes against the variant update's download below.
      const p2 = await cli(['push', 'bench/win98:games-v2', g2, '--seed', g1], srv.url);
      extra.pushV2Bytes = Number(p2.json.uploadBytes);
      const blob = String(p2.json.blobDigest);
      serverPeak = Math.max(serverPeak, srv.sampledPeak());
      // 2. GET, cold then warm, then ranges; the plain file server in the same order.
      await srv.stop();
      srv = await startServer(data);
      const blobUrl = `${srv.url}/v2/bench/win98/blobs/${blob}`;
      const plainUrl = `http://127.0.0.1:${plainPort}/`;
      if (step('get')) {
        note('GET games-v2 cold (snapyard)', await readAll(blobUrl));
        note('GET games-v2 (node:http, 1st)', await readAll(plainUrl));
        note('GET games-v2 warm (snapyard)', await readAll(blobUrl));
        note('GET games-v2 (node:http, 2nd)', await readAll(plainUrl));
        let a = 0;
        let b = 0;
        for (const r of ranges) {
          a += await readAll(blobUrl, r);
          b += await readAll(plainUrl, r);
        }
        note(`${RANGES} x 16 MiB ranges (snapyard)`, a);
        note(`${RANGES} x 16 MiB ranges (node:http)`, b);
      }
      // 3. full pull against curl | zstd -d.
      if (step('pull')) {
        const out = join(tmp, 'full.qcow2');
        const full = await cli(['pull', 'bench/win98:games-v2', '-o', out, '--cache', join(tmp, 'cache-full')], srv.url);
        note('snapyard pull games-v2 (full, empty cache)', full.wall);
        note('snapyard pull games-v2 (its own seconds)', Number(full.json.seconds));
        rmSync(out, { force: true });
        rmSync(join(tmp, 'cache-full'), { recursive: true, force: true });
        note('curl | zstd -d games-v2', timedCmd('sh', ['-c', `curl -sf http://127.0.0.1:${zstPort}/ | zstd -d -q -o ${join(tmp, 'ref.qcow2')}`]));
        rmSync(join(tmp, 'ref.qcow2'), { force: true });
      }
      // 4. variant update: games-v1 in the cache, games-v2 as an overlay over base-v1.
      if (step('update')) {
        const cache = join(tmp, 'cache');
        await cli(['pull', 'bench/win98:games-v1', '-o', join(tmp, 'g1.qcow2'), '--overlay', '--base', base, '--cache', cache], srv.url);
        rmSync(join(tmp, 'g1.qcow2'), { force: true });
        const up = await cli(['pull', 'bench/win98:games-v2', '-o', join(tmp, 'g2.qcow2'), '--overlay', '--base', base, '--cache', cache], srv.url, { SNAPYARD_TRACE: '1' });
        extra.updatePullBytes = Number(up.json.bytesDownloaded) + Number(up.json.indexBytes ?? 0);
        note('variant update games-v1 -> games-v2 (process)', up.wall);
        note('variant update (its own seconds)', Number(up.json.seconds));
        extra[`trace run ${run}`] = up.stderr.split('\n').filter((l) => /^\[\d/.test(l)).join(' | ');
      }
      serverPeak = Math.max(serverPeak, srv.sampledPeak());
      await srv.stop();
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
} finally {
  plainFile.kill();
  plainZst.kill();
  rmSync(refDir, { recursive: true, force: true });
}

const r = (ref: string, ours: string) => best[ref]! / best[ours]!;
const spread = (ref: string, ours: string) => (runsOf[ours] ?? []).map((s, i) => (runsOf[ref]![i]! / s).toFixed(2)).join(', ');
const figures = [
  { figure: 'push of a new base: speed vs casync make', value: r('casync make base-v1', 'snapyard push base-v1'), goal: 1.5, runs: spread('casync make base-v1', 'snapyard push base-v1') },
  { figure: 'GET cold vs node:http', value: r('GET games-v2 (node:http, 1st)', 'GET games-v2 cold (snapyard)'), goal: 0.9, runs: spread('GET games-v2 (node:http, 1st)', 'GET games-v2 cold (snapyard)') },
  { figure: 'GET warm vs node:http', value: r('GET games-v2 (node:http, 2nd)', 'GET games-v2 warm (snapyard)'), goal: 0.9, runs: spread('GET games-v2 (node:http, 2nd)', 'GET games-v2 warm (snapyard)') },
  { figure: 'Range GETs vs node:http', value: r(`${RANGES} x 16 MiB ranges (node:http)`, `${RANGES} x 16 MiB ranges (snapyard)`), goal: 0.9, runs: spread(`${RANGES} x 16 MiB ranges (node:http)`, `${RANGES} x 16 MiB ranges (snapyard)`) },
  { figure: 'full pull vs curl | zstd -d', value: r('curl | zstd -d games-v2', 'snapyard pull games-v2 (full, empty cache)'), goal: 0.8, runs: spread('curl | zstd -d games-v2', 'snapyard pull games-v2 (full, empty cache)') },
  { figure: 'variant update, whole process (s)', value: best['variant update games-v1 -> games-v2 (process)']!, goal: 2, lower: true, runs: (runsOf['variant update games-v1 -> games-v2 (process)'] ?? []).map((s) => s.toFixed(2)).join(', ') },
  { figure: 'server peak RSS (MB)', value: serverPeak / MB, goal: 300, lower: true, runs: '' },
].filter((f) => f.value !== undefined && Number.isFinite(f.value)); // steps left out by --only
if (JSON_OUT) {
  console.log(JSON.stringify({ runs: RUNS, best, runsOf, extra, serverPeak, figures }));
} else {
  log(`\nbest of ${RUNS} runs (seconds):`);
  for (const [k, v] of Object.entries(best)) log(`  ${k.padEnd(48)} ${v.toFixed(2)}   (runs: ${runsOf[k]!.map((x) => x.toFixed(2)).join(', ')})`);
  if (extra.updatePullBytes !== undefined) log(`  push of games-v2 with --seed games-v1: ${(Number(extra.pushV2Bytes) / MB).toFixed(3)} MB sent; the variant update's pull of the same change: ${(Number(extra.updatePullBytes) / MB).toFixed(3)} MB`);
  if (extra.storedPush !== undefined) log(`  stored after push: ${(Number(extra.storedPush) / MB).toFixed(1)} MB of packs; casync store ${(Number(extra.storedCasync) / MB).toFixed(1)} MB`);
  for (const [k, v] of Object.entries(extra)) if (k.startsWith('trace')) log(`  ${k}: ${String(v)}`);
  log('\nfigures:');
  for (const f of figures) {
    const ok = f.lower ? f.value < f.goal : f.value >= f.goal;
    log(`  ${f.figure.padEnd(40)} ${f.value.toFixed(2)}  goal ${f.lower ? '<' : '>='} ${f.goal}  ${ok ? 'PASS' : 'FAIL'}${f.runs ? `  (per run: ${f.runs})` : ''}`);
  }
}
process.exit(0);

/**
 * Ingest and GET throughput of one file through the HTTP API, against casync and
 * zstd (ingest) and node:http serving the plain file (GET), in the same run; and
 * the server's peak RSS while it ingests and serves.
 *
 *   npx tsx bench/ingest-get.ts FILE [--runs N] [--patch-mib N] [--gets N]
 *
 * e.g. FILE = the bench corpus's win98-base-v1.qcow2. Each ingest runs on a
 * fresh, empty store; figures are the best of --runs (default 3). Uploads and
 * downloads use curl (a light client, so the figures are the server's); the
 * chunked upload sends --patch-mib MiB PATCHes (default 64), cut from the file
 * with split(1) before timing. GET is timed
 * --gets times (default 3) per fresh server: the first is reported as cold.
 */
import { createReadStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fork } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { MB, fmt, need, rssOf, startServer, timed, timedCmd, type ServerProc } from './lib.js';

const args = process.argv.slice(2);
const fileArg = args.find((a) => !a.startsWith('--'));
if (!fileArg) {
  console.error('usage: npx tsx bench/ingest-get.ts FILE [--runs N] [--patch-mib N]');
  process.exit(2);
}
const file: string = fileArg;
const opt = (name: string, def: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const RUNS = opt('--runs', 3);
const PATCH = opt('--patch-mib', 64) * 1024 * 1024;
const GETS = opt('--gets', 3);
need('casync', 'casync');
need('curl', 'curl');
need('zstd', 'zstd');
const size = statSync(file).size;
const digest = await new Promise<string>((res) => {
  const h = createHash('sha256');
  createReadStream(file).on('data', (d) => h.update(d)).on('end', () => res(`sha256:${h.digest('hex')}`));
});
console.log(`input ${file}: ${(size / MB).toFixed(1)} MB, ${digest}`);

/** Transfers use curl, a light client: the figures are the server's, not a JS client's. */
function curl(args: string[]): string {
  return execFileSync('curl', ['-s', '-S', '--fail-with-body', ...args], { encoding: 'utf8' });
}

async function monolithic(srv: ServerProc): Promise<void> {
  curl(['-o', '/dev/null', '-X', 'POST', '-H', 'Content-Type: application/octet-stream', '-T', file, `${srv.url}/v2/bench/blob/blobs/uploads?digest=${digest}`]);
}

/** The file cut into PATCH-sized pieces once, before any timing, so each PATCH is a plain `curl -T`. */
let pieces: string[] = [];
function splitOnce(dir: string): string[] {
  if (pieces.length === 0) {
    execFileSync('split', ['-b', String(PATCH), '-a', '4', '-d', file, join(dir, 'piece-')]);
    pieces = readdirSync(dir).filter((f) => f.startsWith('piece-')).sort().map((f) => join(dir, f));
  }
  return pieces;
}

async function chunked(srv: ServerProc): Promise<void> {
  const loc = /^location: (.+)$/im.exec(curl(['-D', '-', '-o', '/dev/null', '-X', 'POST', `${srv.url}/v2/bench/blob/blobs/uploads/`]))![1]!.trim();
  // One curl for all the PATCHes (`--next`): one connection, no process start between them.
  const args: string[] = [];
  let off = 0;
  for (const piece of pieces) {
    const n = statSync(piece).size;
    if (args.length > 0) args.push('--next', '-s', '-S', '--fail-with-body');
    args.push('-o', '/dev/null', '-X', 'PATCH', '-H', 'Content-Type: application/octet-stream', '-H', `Content-Range: ${off}-${off + n - 1}`, '-T', piece, `${srv.url}${loc}`);
    off += n;
  }
  curl(args);
  curl(['-o', '/dev/null', '-X', 'PUT', `${srv.url}${loc}?digest=${digest}`]);
}

function getAll(url: string): void {
  const n = Number(curl(['-o', '/dev/null', '-w', '%{size_download}', url]));
  if (n !== size) throw new Error(`GET returned ${n} bytes`);
}

const splitDir = mkdtempSync(join(tmpdir(), 'snapyard-pieces-'));
splitOnce(splitDir);
process.on('exit', () => rmSync(splitDir, { recursive: true, force: true }));
const results: Record<string, number> = {};
/** Every run's seconds, per figure (the spread, and each run's own ratios). */
const perRun: Record<string, number[]> = {};
const best = (k: string, s: number) => {
  results[k] = Math.min(results[k] ?? Infinity, s);
  (perRun[k] ??= []).push(s);
};
let peakIngest = 0;
let peakGet = 0;
let data = '';
for (let run = 0; run < RUNS; run++) {
  const tmp = mkdtempSync(join(tmpdir(), 'snapyard-bench-'));
  best('zstd -3 -T0', timedCmd('zstd', ['-3', '-T0', '-q', '-f', file, '-o', join(tmp, 'out.zst')]));
  best('casync make', timedCmd('casync', ['make', '--compression=zstd', '--chunk-size=16384:65536:262144', `--store=${join(tmp, 'castr')}`, join(tmp, 'x.caibx'), file]));
  for (const [name, fn] of [['snapyard monolithic', monolithic], ['snapyard chunked', chunked]] as const) {
    data = join(tmp, name.replace(/ /g, '-'));
    const srv = await startServer(data);
    const t = await timed(() => fn(srv));
    best(`${name} ingest`, t.seconds);
    peakIngest = Math.max(peakIngest, srv.sampledPeak(), rssOf(srv.pid).peak);
    await srv.stop();
  }
  // GET: the blob just stored (a fresh server: the first GET is cold, the next ones warm)
  // vs node:http serving the plain file (its own process too).
  const srv = await startServer(data);
  srv.resetPeak();
  for (let g = 0; g < GETS; g++) {
    best(g === 0 ? 'snapyard GET (cold)' : 'snapyard GET', (await timed(async () => getAll(`${srv.url}/v2/bench/blob/blobs/${digest}`))).seconds);
  }
  peakGet = Math.max(peakGet, srv.sampledPeak(), rssOf(srv.pid).peak);
  await srv.stop();
  const plain = fork(join(import.meta.dirname, 'plain-file-server.ts'), [file], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((res) => plain.once('message', (m) => res(m as number)));
  for (let g = 0; g < GETS; g++) best('node:http GET', (await timed(async () => getAll(`http://127.0.0.1:${port}/`))).seconds);
  plain.kill();
  rmSync(tmp, { recursive: true, force: true });
}

console.log(`\nbest of ${RUNS} runs, ${(size / MB).toFixed(1)} MB:`);
for (const [k, s] of Object.entries(results)) console.log(`  ${k.padEnd(28)} ${s.toFixed(2)} s  ${fmt(size, s)}`);
const ratio = (a: string, b: string) => results[b]! / results[a]!;
/** Each run's ratio against the reference timed in that run, as "min-max". */
const spread = (a: string, b: string) => {
  const r = perRun[a]!.map((s, i) => perRun[b]![i]! / s);
  return `${Math.min(...r).toFixed(2)}-${Math.max(...r).toFixed(2)}`;
};
console.log(`\n  ingest monolithic / casync make: ${ratio('snapyard monolithic ingest', 'casync make').toFixed(2)}x (per run: ${spread('snapyard monolithic ingest', 'casync make')}x)`);
console.log(`  ingest chunked / casync make:    ${ratio('snapyard chunked ingest', 'casync make').toFixed(2)}x (per run: ${spread('snapyard chunked ingest', 'casync make')}x)`);
console.log(`  ingest monolithic / zstd -3 -T0: ${ratio('snapyard monolithic ingest', 'zstd -3 -T0').toFixed(2)}x`);
console.log(`  GET / node:http plain file:      ${ratio('snapyard GET', 'node:http GET').toFixed(2)}x (cold: ${ratio('snapyard GET (cold)', 'node:http GET').toFixed(2)}x)`);
console.log(`  server peak RSS: ingest ${(peakIngest / MB).toFixed(0)} MB, GET ${(peakGet / MB).toFixed(0)} MB`);
console.log(JSON.stringify({ file, size, runs: RUNS, seconds: results, perRun, peakRssIngest: peakIngest, peakRssGet: peakGet }));

/**
 * Ingest and GET throughput of one file through the HTTP API, against casync and
 * zstd (ingest) and node:http serving the plain file (GET), in the same run; and
 * the server's peak RSS while it ingests and serves.
 *
 *   npx tsx bench/ingest-get.ts FILE [--runs N] [--patch-mib N]
 *
 * e.g. FILE = the bench corpus's win98-base-v1.qcow2. Each ingest runs on a
 * fresh, empty store; figures are the best of --runs (default 3).
 */
import { createReadStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fork } from 'node:child_process';
import { request } from 'undici';
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
const PATCH = opt('--patch-mib', 16) * 1024 * 1024;
need('casync', 'casync');
need('zstd', 'zstd');
const size = statSync(file).size;
const digest = await new Promise<string>((res) => {
  const h = createHash('sha256');
  createReadStream(file).on('data', (d) => h.update(d)).on('end', () => res(`sha256:${h.digest('hex')}`));
});
console.log(`input ${file}: ${(size / MB).toFixed(1)} MB, ${digest}`);

async function monolithic(srv: ServerProc): Promise<void> {
  const r = await request(`${srv.url}/v2/bench/blob/blobs/uploads/?digest=${digest}`, {
    method: 'POST',
    body: createReadStream(file, { highWaterMark: 1 << 20 }),
    headers: { 'content-length': String(size), 'content-type': 'application/octet-stream' },
  });
  await r.body.text();
  if (r.statusCode !== 201) throw new Error(`monolithic push: ${r.statusCode}`);
}

async function chunked(srv: ServerProc): Promise<void> {
  const start = await request(`${srv.url}/v2/bench/blob/blobs/uploads/`, { method: 'POST' });
  await start.body.text();
  const loc = `${srv.url}${start.headers.location as string}`;
  for (let off = 0; off < size; off += PATCH) {
    const end = Math.min(off + PATCH, size);
    const r = await request(loc, {
      method: 'PATCH',
      body: createReadStream(file, { start: off, end: end - 1, highWaterMark: 1 << 20 }),
      headers: { 'content-range': `${off}-${end - 1}`, 'content-length': String(end - off), 'content-type': 'application/octet-stream' },
    });
    await r.body.text();
    if (r.statusCode !== 202) throw new Error(`PATCH: ${r.statusCode}`);
  }
  const fin = await request(`${loc}?digest=${digest}`, { method: 'PUT' });
  await fin.body.text();
  if (fin.statusCode !== 201) throw new Error(`PUT: ${fin.statusCode}`);
}

async function getAll(url: string): Promise<number> {
  const r = await request(url);
  let n = 0;
  for await (const piece of r.body) n += (piece as Buffer).byteLength;
  if (n !== size) throw new Error(`GET returned ${n} bytes`);
  return n;
}

const results: Record<string, number> = {};
const best = (k: string, s: number) => { results[k] = Math.min(results[k] ?? Infinity, s); };
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
  // GET: the blob just stored vs node:http serving the plain file (its own process too).
  const srv = await startServer(data);
  srv.resetPeak();
  best('snapyard GET', (await timed(() => getAll(`${srv.url}/v2/bench/blob/blobs/${digest}`))).seconds);
  peakGet = Math.max(peakGet, srv.sampledPeak());
  await srv.stop();
  const plain = fork(join(import.meta.dirname, 'plain-file-server.ts'), [file], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((res) => plain.once('message', (m) => res(m as number)));
  best('node:http GET', (await timed(() => getAll(`http://127.0.0.1:${port}/`))).seconds);
  plain.kill();
  rmSync(tmp, { recursive: true, force: true });
}

console.log(`\nbest of ${RUNS} runs, ${(size / MB).toFixed(1)} MB:`);
for (const [k, s] of Object.entries(results)) console.log(`  ${k.padEnd(28)} ${s.toFixed(2)} s  ${fmt(size, s)}`);
const ratio = (a: string, b: string) => results[b]! / results[a]!;
console.log(`\n  ingest monolithic / casync make: ${ratio('snapyard monolithic ingest', 'casync make').toFixed(2)}x`);
console.log(`  ingest chunked / casync make:    ${ratio('snapyard chunked ingest', 'casync make').toFixed(2)}x`);
console.log(`  ingest monolithic / zstd -3 -T0: ${ratio('snapyard monolithic ingest', 'zstd -3 -T0').toFixed(2)}x`);
console.log(`  GET / node:http plain file:      ${ratio('snapyard GET', 'node:http GET').toFixed(2)}x`);
console.log(`  server peak RSS: ingest ${(peakIngest / MB).toFixed(0)} MB, GET ${(peakGet / MB).toFixed(0)} MB`);
console.log(JSON.stringify({ file, size, runs: RUNS, seconds: results, peakRssIngest: peakIngest, peakRssGet: peakGet }));

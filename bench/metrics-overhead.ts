/**
 * Issue 9: what the metrics cost. `snapyard push` of an image and a GET of
 * the stored blob, against a server with metrics on and one started with
 * --disable-metrics, alternating in one run (medians of N rounds).
 *
 *   npx tsx bench/metrics-overhead.ts IMAGE [--runs 3]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { request } from 'undici';
import { BIN, startServer } from './lib.js';

const args = process.argv.slice(2);
const ri = args.indexOf('--runs');
const RUNS = ri >= 0 ? Number(args.splice(ri, 2)[1]) : 3;
const IMAGE = args[0];
if (!IMAGE) {
  console.error('usage: npx tsx bench/metrics-overhead.ts IMAGE [--runs N]');
  process.exit(2);
}

function run(cmd: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const c = spawn(process.execPath, [BIN, ...cmd], { stdio: ['ignore', 'ignore', 'inherit'], env });
    c.on('exit', (code) => (code === 0 ? resolve((performance.now() - t0) / 1000) : reject(new Error(`snapyard ${cmd[0]} exited ${code}`))));
  });
}

async function getBlob(url: string, path: string): Promise<number> {
  const t0 = performance.now();
  const res = await request(`${url}${path}`);
  let n = 0;
  for await (const p of res.body) n += (p as Buffer).length;
  if (res.statusCode !== 200 || n === 0) throw new Error(`GET ${path}: ${res.statusCode}`);
  return (performance.now() - t0) / 1000;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const times = { push: { on: [] as number[], off: [] as number[] }, get: { on: [] as number[], off: [] as number[] } };
const work = mkdtempSync(join(tmpdir(), 'snapyard-metrics-bench-'));
for (let r = 0; r < RUNS; r++) {
  for (const mode of (r % 2 === 0 ? ['on', 'off'] : ['off', 'on']) as Array<'on' | 'off'>) {
    const data = join(work, `data-${mode}-${r}`);
    const server = await startServer(data, mode === 'off' ? ['--disable-metrics'] : []);
    const pushS = await run(['push', 'bench/img:v1', IMAGE, '--registry', server.url, '--cache', join(work, `cache-${mode}-${r}`), '--level', '3']);
    const m = await request(`${server.url}/v2/bench/img/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const layer = ((await m.body.json()) as { layers: Array<{ digest: string }> }).layers[0]!.digest;
    await getBlob(server.url, `/v2/bench/img/blobs/${layer}`); // warm the page cache
    const getS = await getBlob(server.url, `/v2/bench/img/blobs/${layer}`);
    times.push[mode].push(pushS);
    times.get[mode].push(getS);
    console.error(`round ${r} metrics ${mode}: push ${pushS.toFixed(2)} s, GET ${getS.toFixed(2)} s`);
    await server.stop();
    rmSync(data, { recursive: true, force: true });
    rmSync(join(work, `cache-${mode}-${r}`), { recursive: true, force: true });
  }
}
rmSync(work, { recursive: true, force: true });
for (const k of ['push', 'get'] as const) {
  const on = median(times[k].on);
  const off = median(times[k].off);
  console.log(`${k === 'push' ? 'snapyard push' : 'GET of the blob'}: metrics on ${on.toFixed(2)} s, off ${off.toFixed(2)} s (medians of ${RUNS}): overhead ${(((on - off) / off) * 100).toFixed(1)}% (goal <= 3%)`);
}

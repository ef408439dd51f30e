/**
 * Issue 8's slow-client probe: a normal pull's latency with N slow
 * connections held open against the server (each trickles request headers,
 * one byte a second, and reconnects when dropped) against the same pull on
 * an idle server, in the same run.
 *
 *   npx tsx bench/slow-clients.ts IMAGE [--slow 500] [--runs 5]
 *
 * The pull is `snapyard pull` of IMAGE as a full image with an empty cache
 * (the client in this process, so the timing covers only the pull).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Registry } from '../client/registry.js';
import { ClientCache } from '../client/cache.js';
import { pull } from '../client/pull.js';
import { parseRef } from '../client/ref.js';
import { BIN, rssOf, startServer } from './lib.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1]! : dflt;
};
const SLOW = Number(flag('--slow', '500'));
const RUNS = Number(flag('--runs', '5'));
const IMAGE = args[0];
if (!IMAGE) {
  console.error('usage: npx tsx bench/slow-clients.ts IMAGE [--slow N] [--runs N]');
  process.exit(2);
}

const work = mkdtempSync(join(tmpdir(), 'snapyard-slow-'));
const server = await startServer(join(work, 'data'));
execFileSync(process.execPath, [BIN, 'push', 'slow/img:v1', IMAGE, '--registry', server.url, '--cache', join(work, 'push-cache')], { stdio: ['ignore', 'ignore', 'inherit'] });
const port = Number(new URL(server.url).port);

async function onePull(i: number, label: string): Promise<number> {
  const reg = new Registry(server.url);
  const cache = new ClientCache(join(work, `cache-${label}-${i}`));
  const t0 = performance.now();
  try {
    await pull(parseRef('slow/img:v1'), { registry: reg, cache, output: join(work, `out-${label}-${i}.img`) });
    return (performance.now() - t0) / 1000;
  } finally {
    await cache.close();
    await reg.close();
    rmSync(join(work, `cache-${label}-${i}`), { recursive: true, force: true });
    rmSync(join(work, `out-${label}-${i}.img`), { force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

let stop = false;
let open = 0;
let dropped = 0;
function slowClient(): void {
  if (stop) return;
  const sock: Socket = connect(port, '127.0.0.1');
  const head = 'GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ';
  let i = 0;
  let timer: NodeJS.Timeout | undefined;
  sock.on('connect', () => {
    open++;
    timer = setInterval(() => sock.write(head[i++ % head.length]!), 1000);
  });
  sock.on('error', () => undefined);
  sock.on('close', () => {
    if (timer) {
      open--;
      dropped++;
    }
    clearInterval(timer);
    setTimeout(slowClient, 50);
  });
}

const idle: number[] = [];
const loaded: number[] = [];
await onePull(-1, 'warm'); // first pull warms the page cache
for (let i = 0; i < RUNS; i++) idle.push(await onePull(i, 'idle'));
for (let i = 0; i < SLOW; i++) slowClient();
while (open < SLOW * 0.95) await new Promise((r) => setTimeout(r, 100));
console.log(`${open} slow connections open`);
for (let i = 0; i < RUNS; i++) loaded.push(await onePull(i, 'slow'));
const openAtEnd = open;
stop = true;
const rss = rssOf(server.pid);
await server.stop();
rmSync(work, { recursive: true, force: true });
console.log(`pull of ${IMAGE}: idle median ${median(idle).toFixed(2)} s (${idle.map((x) => x.toFixed(2)).join(', ')})`);
console.log(`with ${SLOW} slow connections (${openAtEnd} open at the end, ${dropped} dropped by the header timeout and reopened): median ${median(loaded).toFixed(2)} s (${loaded.map((x) => x.toFixed(2)).join(', ')})`);
console.log(`ratio ${(median(loaded) / median(idle)).toFixed(2)}x (goal <= 2x); server peak RSS ${(rss.peak / 1e6).toFixed(0)} MB`);
process.exit(0);

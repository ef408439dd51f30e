/**
 * Issue 13's figures for `snapyard mount` (a lazily fetched NBD export),
 * every reference measured in the same run:
 *
 *   npx tsx bench/mount.ts IMAGE [--mbit 100] [--runs 3] [--json]
 *
 * IMAGE (a corpus image, FAT32 in its first partition) is pushed to a fresh
 * `snapyard serve` (not timed); every client reaches it through a proxy that
 * shapes the server's bytes to --mbit (bench/throttle-proxy.ts). The
 * boot-like read set is the FAT, the root directory and every directory and
 * file under \WINDOWS (bench/fat-read-set.ts), read in that order by one
 * qemu-io process (one `read` per range, at most 8 MiB each).
 *
 * 1. first read: from spawning `snapyard mount` (empty cache, no base) to a
 *    qemu-io `read 0 4k` of the export answered (goal < 1 s); the time of
 *    `snapyard --help` in the same run is its floor.
 * 2. read set through the overlay `mount --overlay` made, right after (node
 *    A, prefetch off, recording its boot trace): goal <= 1.5 x (the set's
 *    distinct bytes at link speed) + 1 s, and >= 5x sooner (from the mount's
 *    spawn) than `snapyard pull` of the whole image through the same link
 *    followed by the same reads on the pulled file.
 * 3. boot trace: node B (empty cache) mounts after node A pushed its trace;
 *    spawn to read set done against node A's: goal >= 1.5x sooner.
 * 4. cached reads: node B reads the set again (all local: the mount's local
 *    copy) through the export, against qemu-io on IMAGE itself, alternating,
 *    --runs medians: goal <= 2x. The same reads through qemu-nbd serving
 *    IMAGE (QEMU's own NBD server) show what the NBD transport costs alone.
 * 5. the mount processes' peak RSS (VmHWM): goal < 300 MB. Mounts run with
 *    the container image's MALLOC_MMAP_THRESHOLD_=131072, MALLOC_ARENA_MAX=2 and
 *    NODE_OPTIONS=--max-semi-space-size=4 (Dockerfile), as
 *    the server does in bench/lib.ts.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { bootReadSet, type Range } from './fat-read-set.js';
import { BIN, IMAGE_ENV, MB, need, rssOf, startServer, timed } from './lib.js';
import { startThrottleProxy } from './throttle-proxy.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { mbit: { type: 'string', default: '100' }, runs: { type: 'string', default: '3' }, json: { type: 'boolean', default: false } } });
const image = positionals[0];
if (!image) {
  process.stderr.write('usage: npx tsx bench/mount.ts IMAGE [--mbit 100] [--runs 3] [--json]\n');
  process.exit(2);
}
need('qemu-io', 'qemu-utils');
const rate = (Number(values.mbit) * 1e6) / 8;
const runs = Number(values.runs);
const log = (s: string) => process.stderr.write(`${s}\n`);
const dir = mkdtempSync(join(tmpdir(), 'snapyard-mount-bench-'));
const REF = 'bench/win98:img';

/** One qemu-io process reading `set` from `target` (commands on stdin). */
function readSet(target: string, format: 'raw' | 'qcow2', set: Range[], readOnly = true): Promise<void> {
  const lines: string[] = [];
  for (const [o, l] of set) for (let a = o; a < o + l; a += 8 << 20) lines.push(`read ${a} ${Math.min(8 << 20, o + l - a)}`);
  lines.push('quit');
  const cmds = join(dir, 'reads.txt');
  writeFileSync(cmds, `${lines.join('\n')}\n`);
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', `qemu-io ${readOnly ? '-r ' : ''}-f ${format} '${target}' < '${cmds}'`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    p.once('exit', (code) => (code === 0 && !/error|failed/i.test(out) ? resolve() : reject(new Error(`qemu-io on ${target} (exit ${code}): ${out.split('\n').filter((l) => /error|failed/i.test(l)).slice(0, 3).join('; ')}`))));
  });
}

interface MountProc {
  child: ChildProcess;
  url: string;
  event(name: string): Promise<Record<string, unknown>>;
  stop(): Promise<{ stats: Record<string, unknown>; peakRss: number }>;
}

function startMount(node: string, extra: string[]): MountProc {
  const socket = join(dir, `${node}.sock`);
  const child = spawn(process.execPath, [BIN, 'mount', REF, '--socket', socket, '--json', '--registry', registry, '--cache', join(dir, `${node}-cache`), ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
    // The pod's sidecar runs from the image, so with its memory settings.
    env: { ...IMAGE_ENV, ...process.env },
  });
  const events: Array<Record<string, unknown>> = [];
  const waiting: Array<() => void> = [];
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      events.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      buf = buf.slice(nl + 1);
    }
    for (const w of waiting.splice(0)) w();
  });
  const event = (name: string) => new Promise<Record<string, unknown>>((resolve, reject) => {
    const check = () => {
      const e = events.find((x) => x.event === name);
      if (e) resolve(e);
      else if (child.exitCode !== null) reject(new Error(`snapyard mount exited ${child.exitCode} before ${name}`));
      else waiting.push(check);
    };
    child.once('exit', () => waiting.splice(0).forEach((w) => w()));
    check();
  });
  return {
    child,
    url: `nbd+unix:///?socket=${socket}`,
    event,
    stop: async () => {
      const peakRss = rssOf(child.pid!).peak;
      child.kill('SIGTERM');
      return { stats: await event('stopped'), peakRss };
    },
  };
}

const run = promisify(execFile);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const server = await startServer(join(dir, 'data'));
const proxy = await startThrottleProxy(server.port, rate);
const registry = `http://127.0.0.1:${proxy.port}`;
const figures: Array<{ name: string; measured: number; reference: number; goal: string; pass: boolean; detail: string }> = [];
const figure = (name: string, measured: number, reference: number, goal: string, pass: boolean, detail: string) => {
  figures.push({ name, measured, reference, goal, pass, detail });
  log(`${pass ? 'PASS' : 'FAIL'} ${name}: ${detail} (goal ${goal})`);
};
try {
  log(`pushing ${image} (not timed)`);
  execFileSync(process.execPath, [BIN, 'push', REF, image, '--registry', server.url, '--cache', join(dir, 'push-cache')], { stdio: ['ignore', 'ignore', 'inherit'] });
  const set = bootReadSet(image);
  const distinct = set.reduce((n, r) => n + r[1], 0);
  const atLink = distinct / rate;
  log(`read set: ${set.length} ranges, ${(distinct / MB).toFixed(1)} MB (${atLink.toFixed(2)} s at ${values.mbit} Mbit/s)`);

  // The floor of the first read: node starting and loading the command line, nothing else (same run, same load).
  const help = (await timed(() => run(process.execPath, [BIN, '--help']))).seconds;
  // 1-2: node A, empty cache, prefetch off, recording the boot trace.
  const overlayA = join(dir, 'a-instance.qcow2');
  const t0 = performance.now();
  const a = startMount('a', ['--prefetch-rate', '0', '--overlay', overlayA, '--record-trace', '3600']);
  await a.event('listening');
  const listenA = (performance.now() - t0) / 1000;
  // Async only from here: the throttling proxy runs on this process's event loop.
  await run('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4k', a.url]);
  const firstRead = (performance.now() - t0) / 1000;
  figure('first read', firstRead, 1, '< 1 s', firstRead < 1, `${firstRead.toFixed(2)} s from spawn to the first read answered (listening after ${listenA.toFixed(2)} s; snapyard --help alone ${help.toFixed(2)} s)`);
  const lazy = await timed(() => readSet(overlayA, 'qcow2', set, false));
  const lazyTotal = (performance.now() - t0) / 1000;
  const a1 = await a.stop(); // pushes the trace
  figure('read set, lazy', lazy.seconds, 1.5 * atLink + 1, `<= 1.5 x ${atLink.toFixed(2)} s + 1 s`, lazy.seconds <= 1.5 * atLink + 1,
    `${lazy.seconds.toFixed(2)} s through the overlay; ${((a1.stats.wireBytes as number) / MB).toFixed(1)} MB of chunks fetched`);

  log('reference: snapyard pull of the whole image through the same link, then the same reads');
  const full = join(dir, 'full.qcow2');
  const pulled = await timed(() => run(process.execPath, [BIN, 'pull', REF, '-o', full, '--registry', registry, '--cache', join(dir, 'full-cache')]));
  const fullReads = await timed(() => readSet(full, 'qcow2', set));
  const fullTotal = pulled.seconds + fullReads.seconds;
  figure('lazy vs full pull', fullTotal / lazyTotal, 5, '>= 5x sooner', fullTotal / lazyTotal >= 5,
    `${lazyTotal.toFixed(2)} s (mount spawn to read set done) vs ${fullTotal.toFixed(2)} s (pull ${pulled.seconds.toFixed(2)} s + reads ${fullReads.seconds.toFixed(2)} s): ${(fullTotal / lazyTotal).toFixed(2)}x`);

  // 3: node B, empty cache, with node A's trace.
  const overlayB = join(dir, 'b-instance.qcow2');
  const t1 = performance.now();
  const b = startMount('b', ['--prefetch-rate', '0', '--overlay', overlayB]);
  await b.event('listening');
  const readyB = b.event('ready');
  await readSet(overlayB, 'qcow2', set, false);
  const traced = (performance.now() - t1) / 1000;
  figure('boot trace', lazyTotal / traced, 1.5, '>= 1.5x sooner', lazyTotal / traced >= 1.5,
    `${traced.toFixed(2)} s with the trace (${JSON.stringify((await readyB).trace)}) vs ${lazyTotal.toFixed(2)} s without: ${(lazyTotal / traced).toFixed(2)}x`);

  // 4: cached reads on node B against qemu-io on the image file, alternating; and, as the NBD transport's
  // own floor, the same reads through qemu-nbd serving the image file (QEMU's NBD server, in C).
  const nbdSocket = join(dir, 'qemu-nbd.sock');
  const qemuNbd = spawn('qemu-nbd', ['-r', '-t', '-f', 'qcow2', '-k', nbdSocket, image], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !existsSync(nbdSocket); i++) await new Promise((r) => setTimeout(r, 50));
  const cached: number[] = [];
  const local: number[] = [];
  const viaQemuNbd: number[] = [];
  try {
    for (let i = 0; i < runs; i++) {
      cached.push((await timed(() => readSet(b.url, 'raw', set))).seconds);
      local.push((await timed(() => readSet(image, 'qcow2', set))).seconds);
      viaQemuNbd.push((await timed(() => readSet(`nbd+unix:///?socket=${nbdSocket}`, 'raw', set))).seconds);
    }
  } finally {
    qemuNbd.kill();
  }
  const b1 = await b.stop();
  const ratio = median(cached) / median(local);
  figure('cached read', ratio, 2, '<= 2x', ratio <= 2, `${median(cached).toFixed(2)} s through the export (all local; ${b1.stats.copyReads as number} reads from the mount's local copy) vs ${median(local).toFixed(2)} s qemu-io on the qcow2: ${ratio.toFixed(2)}x (medians of ${runs}); qemu-nbd serving the qcow2: ${median(viaQemuNbd).toFixed(2)} s, ${(median(viaQemuNbd) / median(local)).toFixed(2)}x`);
  const peak = Math.max(a1.peakRss, b1.peakRss);
  figure('client RSS', peak / MB, 300, '< 300 MB', peak < 300 * MB, `peak ${(peak / MB).toFixed(0)} MB (node A ${(a1.peakRss / MB).toFixed(0)}, node B ${(b1.peakRss / MB).toFixed(0)})`);
  if (values.json) process.stdout.write(`${JSON.stringify({ image, mbit: Number(values.mbit), readSet: { ranges: set.length, bytes: distinct }, figures })}\n`);
} finally {
  await proxy.close();
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(figures.every((f) => f.pass) ? 0 : 1);

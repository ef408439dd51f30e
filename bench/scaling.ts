/**
 * Issue 12's scaling table: how time and memory grow with image size, and
 * how per-request latency grows with the number of stored snapshots.
 *
 *   npx tsx bench/scaling.ts CORPUS_DIR [--sizes 256M,2G,8G] [--snapshots 10,100,1000] [--json]
 *
 * CORPUS_DIR: the bench corpus (bash ../shared/corpus/make-corpus.sh DIR --size bench).
 *
 * 1. Image size. Images of 256 MiB, 2 GiB and 8 GiB virtual: the first
 *    256 MiB of base-v1's guest data; base-v1 itself; the guest data of
 *    base-v1, games-v1, productivity-v1 and games-v2 end to end (so the 8 GiB
 *    image dedups against itself, as a larger disk made of similar installs
 *    would). Each on a fresh server: `snapyard push` (empty client cache) and
 *    a full `snapyard pull` (empty cache): seconds, seconds per GB of file,
 *    client and server peak RSS.
 * 2. Stored snapshots. One server holding base-v1 and games-v1, then 10, 100
 *    and 1,000 manifests in all (distinct manifests, alternately referencing
 *    the two blobs: they share all their chunks): p50 / p99 of 200 manifest
 *    GETs and of 40 delta plans (POST _delta games-v1 having base-v1), and
 *    the server's RSS, at each count.
 * Nothing here is a reference ratio: the figures are growth factors between
 * rows of the same run (time per GB flat = linear).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, MB, need, rssOf, startServer } from './lib.js';

const args = process.argv.slice(2);
const dir = args.find((a) => !a.startsWith('--') && !/^[\d,GMK]+$/i.test(a));
if (!dir) {
  console.error('usage: npx tsx bench/scaling.ts CORPUS_DIR [--sizes 256M,2G,8G] [--snapshots 10,100,1000] [--json]');
  process.exit(2);
}
const list = (name: string, def: string) => {
  const i = args.indexOf(name);
  return (i >= 0 ? args[i + 1]! : def).split(',').filter((x) => x !== '');
};
const SIZES = list('--sizes', '256M,2G,8G');
const COUNTS = list('--snapshots', '10,100,1000').map(Number);
const JSON_OUT = args.includes('--json');
const log = (s: string) => (JSON_OUT ? console.error(s) : console.log(s));
need('qemu-img', 'qemu-utils');
const img = (t: string) => join(dir, `win98-${t}.qcow2`);
const GiB = 1024 ** 3;

const work = mkdtempSync(join(tmpdir(), 'snapyard-scaling-'));

/** The image of a size label, made under `work` (base-v1 itself for 2G). */
function imageOf(size: string): string {
  if (size === '2G') return img('base-v1');
  const out = join(work, `scale-${size}.qcow2`);
  if (existsSync(out)) return out;
  const raw = join(work, `scale-${size}.raw`);
  if (size === '256M') {
    execFileSync('qemu-img', ['dd', '-f', 'qcow2', '-O', 'raw', `if=${img('base-v1')}`, `of=${raw}`, 'bs=1M', 'count=256']);
  } else if (size === '8G') {
    ['base-v1', 'games-v1', 'productivity-v1', 'games-v2'].forEach((t, i) => {
      const part = join(work, `part-${i}.raw`);
      execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', img(t), part]);
      execFileSync('dd', [`if=${part}`, `of=${raw}`, 'bs=1M', `seek=${i * 2048}`, 'conv=sparse,notrunc', 'status=none']);
      rmSync(part);
    });
  } else {
    throw new Error(`size ${size}: expected 256M, 2G or 8G`);
  }
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, out]);
  rmSync(raw);
  return out;
}

/** A snapyard command as its own process: wall seconds and its peak RSS (VmHWM, sampled until it exits). */
function cli(argv: string[], registry: string): Promise<{ wall: number; rss: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...argv, '--registry', registry, '--insecure'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    let rss = 0;
    const timer = setInterval(() => {
      try {
        rss = Math.max(rss, rssOf(child.pid!).peak);
      } catch { /* exited */ }
    }, 20);
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.once('close', (code) => {
      clearInterval(timer);
      if (code !== 0) return reject(new Error(`snapyard ${argv.join(' ')} exited ${code}: ${err.slice(-2000)}`));
      resolve({ wall: (performance.now() - t0) / 1000, rss });
    });
  });
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

interface SizeRow { size: string; virtual: number; file: number; push: number; pushRss: number; pull: number; pullRss: number; serverRss: number }
interface CountRow { manifests: number; manifestP50: number; manifestP99: number; deltaP50: number; deltaP99: number; serverRss: number }
const sizeRows: SizeRow[] = [];
const countRows: CountRow[] = [];

try {
  // 1. image size
  for (const size of SIZES) {
    const file = imageOf(size);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as { 'virtual-size': number };
    const tmp = mkdtempSync(join(work, 'run-'));
    const srv = await startServer(join(tmp, 'data'));
    try {
      const push = await cli(['push', `scale/img:${size}`, file, '--cache', join(tmp, 'cache-push')], srv.url);
      const pull = await cli(['pull', `scale/img:${size}`, '-o', join(tmp, 'out.qcow2'), '--cache', join(tmp, 'cache-pull')], srv.url);
      const row = { size, virtual: info['virtual-size'], file: statSync(file).size, push: push.wall, pushRss: push.rss, pull: pull.wall, pullRss: pull.rss, serverRss: rssOf(srv.pid).peak };
      sizeRows.push(row);
      log(`${size}: file ${(row.file / MB).toFixed(0)} MB, push ${row.push.toFixed(2)} s (${((row.push * GiB) / row.file).toFixed(2)} s/GiB, client ${(row.pushRss / MB).toFixed(0)} MB), full pull ${row.pull.toFixed(2)} s (${((row.pull * GiB) / row.file).toFixed(2)} s/GiB, client ${(row.pullRss / MB).toFixed(0)} MB), server peak ${(row.serverRss / MB).toFixed(0)} MB`);
    } finally {
      await srv.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  // 2. stored snapshots
  if (COUNTS.length > 0) {
    const tmp = mkdtempSync(join(work, 'snaps-'));
    const srv = await startServer(join(tmp, 'data'));
    try {
      await cli(['push', 'scale/win98:base-v1', img('base-v1'), '--cache', join(tmp, 'c')], srv.url);
      await cli(['push', 'scale/win98:games-v1', img('games-v1'), '--cache', join(tmp, 'c')], srv.url);
      const accept = { Accept: 'application/vnd.oci.image.manifest.v1+json' };
      const manifestOf = async (tag: string) => (await (await fetch(`${srv.url}/v2/scale/win98/manifests/${tag}`, { headers: accept })).json()) as Record<string, unknown>;
      const templates = [await manifestOf('base-v1'), await manifestOf('games-v1')];
      const blobOf = (m: Record<string, unknown>) => (m.layers as Array<{ digest: string }>)[0]!.digest;
      let have = 2;
      for (const n of COUNTS) {
        for (; have < n; have++) {
          const m = { ...templates[have % 2]!, annotations: { 'org.opencontainers.image.created': new Date(Date.UTC(2026, 0, 1, 0, 0, have)).toISOString(), 'bench.scaling': String(have) } };
          const r = await fetch(`${srv.url}/v2/scale/win98/manifests/v${have}`, { method: 'PUT', body: JSON.stringify(m), headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
          if (r.status !== 201) throw new Error(`PUT manifest v${have}: HTTP ${r.status} ${await r.text()}`);
        }
        const gets: number[] = [];
        for (let i = 0; i < 200; i++) {
          const tag = i % 2 === 0 ? 'games-v1' : `v${2 + ((i * 7919) % Math.max(1, n - 2))}`;
          const t0 = performance.now();
          const r = await fetch(`${srv.url}/v2/scale/win98/manifests/${n > 2 ? tag : 'games-v1'}`, { headers: accept });
          await r.arrayBuffer();
          if (r.status !== 200) throw new Error(`GET manifest ${tag}: HTTP ${r.status}`);
          gets.push(performance.now() - t0);
        }
        const plans: number[] = [];
        for (let i = 0; i < 40; i++) {
          const t0 = performance.now();
          const r = await fetch(`${srv.url}/snapyard/v1/scale/win98/_delta`, { method: 'POST', body: JSON.stringify({ target: 'games-v1', have: [blobOf(templates[0]!)] }), headers: { 'content-type': 'application/json' } });
          await r.arrayBuffer();
          if (r.status !== 200) throw new Error(`_delta: HTTP ${r.status}`);
          plans.push(performance.now() - t0);
        }
        const row = { manifests: n, manifestP50: pct(gets, 50), manifestP99: pct(gets, 99), deltaP50: pct(plans, 50), deltaP99: pct(plans, 99), serverRss: rssOf(srv.pid).current };
        countRows.push(row);
        log(`${n} manifests: manifest GET p50 ${row.manifestP50.toFixed(1)} ms p99 ${row.manifestP99.toFixed(1)} ms; delta plan p50 ${row.deltaP50.toFixed(1)} ms p99 ${row.deltaP99.toFixed(1)} ms; server RSS ${(row.serverRss / MB).toFixed(0)} MB`);
      }
    } finally {
      await srv.stop();
      rmSync(tmp, { recursive: true, force: true });
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

if (JSON_OUT) console.log(JSON.stringify({ sizes: sizeRows, snapshots: countRows }));
else {
  log('\n| image (virtual) | file | push | per GiB of file | full pull | per GiB | client RSS push / pull | server peak RSS |');
  log('|---|---|---|---|---|---|---|---|');
  for (const r of sizeRows) {
    log(`| ${r.size} | ${(r.file / MB).toFixed(0)} MB | ${r.push.toFixed(2)} s | ${((r.push * GiB) / r.file).toFixed(2)} s | ${r.pull.toFixed(2)} s | ${((r.pull * GiB) / r.file).toFixed(2)} s | ${(r.pushRss / MB).toFixed(0)} / ${(r.pullRss / MB).toFixed(0)} MB | ${(r.serverRss / MB).toFixed(0)} MB |`);
  }
  log('\n| manifests stored | manifest GET p50 / p99 | delta plan p50 / p99 | server RSS |');
  log('|---|---|---|---|');
  for (const r of countRows) log(`| ${r.manifests} | ${r.manifestP50.toFixed(1)} / ${r.manifestP99.toFixed(1)} ms | ${r.deltaP50.toFixed(1)} / ${r.deltaP99.toFixed(1)} ms | ${(r.serverRss / MB).toFixed(0)} MB |`);
}
process.exit(0);

/**
 * Issue 10's four figures, each against a reference measured in the same run.
 *
 *   npx tsx bench/pod-init.ts CORPUS_DIR [--pods 8] [--restarts 5] [--only 1,2,3,4] [--json] [--keep]
 *
 * CORPUS_DIR holds win98-base-v1.qcow2, win98-games-v1.qcow2 and
 * win98-games-v2.qcow2 (../shared/corpus/make-corpus.sh). A snapyard server
 * (its own process) holds the three, pushed with `snapyard push`; the pods
 * talk to it through a byte-counting TCP proxy (bench/wire-proxy.ts).
 *   1 `--pods` concurrent `snapyard pod-init`s of win98-games-v2 on one node
 *     directory that holds base-v1 (an earlier pod-init, SNAPSHOT_BRANCH=base)
 *     and games-v1 in its node cache (`snapyard prefetch`): bytes down through
 *     the proxy and wall time, against one pod-init alone on a node directory
 *     set up the same way; every instance overlay `qemu-img check`ed and
 *     `qemu-img compare`d with games-v2.
 *   2 a restart of one of those pods (persistent mode, everything present):
 *     bytes downloaded and wall time (median of --restarts), with the wall time
 *     of `snapyard --help` (process start-up: the CLI has no --version) beside it.
 *   3 `snapyard import` of games-v1 and games-v2 packaged as gzip tar layers
 *     (/snapshot.qcow2) from a real docker-registry: store growth against
 *     `snapyard push` of the same files into a fresh server.
 *   4 skopeo copy of games-v2 as an uncompressed tar layer image after games-v1
 *     (same packaging): store growth against what `snapyard push` of games-v2
 *     adds after games-v1.
 * Store growth = bytes of the server's data directory (packs, indexes, SQLite)
 * after minus before, each measured once the directory has stopped changing
 * and the server has stopped cleanly (bench/store-growth.ts). Wall times are whole CLI processes (node start-up
 * included); setup (pushes, base pod-init, prefetch, image packaging) is not
 * timed. One line per figure on stdout (--json: one JSON object on stdout,
 * the lines on stderr); progress on stderr.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cleanEnv, runCli } from '../test/helpers/cli.js';
import { startDockerRegistry } from '../test/helpers/docker-registry.js';
import { skopeoIn } from '../test/helpers/old-images.js';
import { cliBuildNote } from './delta-cli.js';
import { MB, need, startServer, type ServerProc } from './lib.js';
import { addOldImage } from './old-image-layout.js';
import { onFreshServer } from './store-growth.js';
import { figureLines, median, type Figure } from './pod-init-report.js';
import { startWireProxy, type WireProxy } from './wire-proxy.js';

const USAGE = 'usage: npx tsx bench/pod-init.ts CORPUS_DIR [--pods 8] [--restarts 5] [--only 1,2,3,4] [--json] [--keep]';
const args = process.argv.slice(2);
const valued = new Set(['--pods', '--restarts', '--only']);
const dirArg = args.find((a, i) => !a.startsWith('--') && !valued.has(args[i - 1] ?? ''));
const value = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const PODS = Number(value('--pods') ?? 8);
const RESTARTS = Number(value('--restarts') ?? 5);
const ONLY = new Set((value('--only') ?? '1,2,3,4').split(','));
if (!dirArg || !Number.isInteger(PODS) || PODS < 2 || !Number.isInteger(RESTARTS) || RESTARTS < 1 || [...ONLY].some((o) => !['1', '2', '3', '4'].includes(o))) {
  console.error(USAGE);
  process.exit(2);
}
const JSON_OUT = args.includes('--json');
const KEEP = args.includes('--keep');
/** Scratch that is done with goes as soon as it is (the bench corpus's layers are GBs), unless --keep. */
const drop = (path: string) => {
  if (!KEEP) rmSync(path, { recursive: true, force: true });
};
const corpus = resolve(dirArg);
const img = { base: join(corpus, 'win98-base-v1.qcow2'), g1: join(corpus, 'win98-games-v1.qcow2'), g2: join(corpus, 'win98-games-v2.qcow2') };
const REPO = 'bench/win98';
need('qemu-img', 'qemu-utils');
if (ONLY.has('3') || ONLY.has('4')) need('skopeo', 'skopeo');
if (ONLY.has('3')) need('docker-registry', 'docker-registry');
const log = (s: string) => process.stderr.write(`${s}\n`);
const build = cliBuildNote();
if (build.warning) log(`warning: ${build.warning}`);

interface Run {
  seconds: number;
  json: Record<string, unknown>;
}

/** `snapyard ARGS` as its own process (async: the proxy runs in this one); throws on a non-zero exit. */
async function cli(argv: string[], env: Record<string, string> = {}): Promise<Run> {
  const t0 = performance.now();
  const r = await runCli(argv, { env: cleanEnv(env), timeoutMs: 3_600_000 });
  const seconds = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`snapyard ${argv.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(last) as Record<string, unknown>;
  } catch { /* not --json */ }
  return { seconds, json };
}

const push = (url: string, tag: string, file: string, cache: string) => cli(['push', `${REPO}:${tag}`, file, '--registry', url, '--cache', cache, '--json']);

/** A pod's environment, as the emulator chart sets it (host:port/repo over plain http). */
function podEnv(host: string, dir: string, pod: string, tag: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    USE_PREBUILT_SNAPSHOT: 'true',
    SNAPSHOT_REGISTRY: `${host}/${REPO}`,
    SNAPYARD_INSECURE: 'true',
    SNAPSHOT_TAG: tag,
    SNAPSHOT_DIR: dir,
    DISK: join(dir, 'win98.qcow2'),
    SNAPSHOT_MODE: 'persistent',
    POD_NAME: pod,
    ...extra,
  };
}

const podInit = (host: string, dir: string, pod: string, tag: string, extra: Record<string, string> = {}) => cli(['pod-init', '--json'], podEnv(host, dir, pod, tag, extra));

/** qemu-img's exit code and its last line (0 = clean / identical). */
function qemuImg(argv: string[]): { ok: boolean; said: string } {
  const r = spawnSync('qemu-img', argv, { encoding: 'utf8' });
  return { ok: r.status === 0, said: `${r.stdout}${r.stderr}`.trim().split('\n').pop() ?? '' };
}

const hostOf = (s: ServerProc) => s.url.replace('http://', '');

/** Figures 1 and 2: pods of one node through the counting proxy. */
async function podFigures(tmp: string, out: Figure[]): Promise<void> {
  const srv = await startServer(join(tmp, 'data-pods'));
  let proxy: WireProxy | undefined;
  try {
    proxy = await startWireProxy(Number(new URL(srv.url).port));
    const viaProxy = `127.0.0.1:${proxy.port}`;
    log('pods: push base-v1, games-v1, games-v2');
    for (const [tag, f] of [['win98-base-v1', img.base], ['win98-games-v1', img.g1], ['win98-games-v2', img.g2]] as const) await push(srv.url, tag, f, join(tmp, 'push-cache'));
    /** A node directory holding base-v1 (an earlier pod-init of it) and games-v1 in its node cache; not counted. */
    const node = async (name: string) => {
      const d = join(tmp, name);
      await podInit(hostOf(srv), d, 'setup-0', 'win98-base-v1', { SNAPSHOT_BRANCH: 'base' });
      await cli(['prefetch', `${REPO}:win98-games-v1`, '--registry', srv.url, '--cache', join(d, '.snapyard-cache')]);
      return d;
    };
    const many = await node('node-many');
    if (ONLY.has('1')) {
      const one = await node('node-one');
      log('1: one pod-init alone (reference)');
      proxy.reset();
      const single = await podInit(viaProxy, one, 'loco-emulator-0', 'win98-games-v2');
      const singleDown = proxy.counts().down;
      log(`1: one pod: ${(singleDown / MB).toFixed(2)} MB down, ${single.seconds.toFixed(2)} s, ${JSON.stringify(single.json)}`);
      drop(one);

      log(`1: ${PODS} pod-inits at once`);
      proxy.reset();
      const t0 = performance.now();
      const pods = await Promise.all(Array.from({ length: PODS }, (_, i) => podInit(viaProxy, many, `loco-emulator-${i}`, 'win98-games-v2')));
      const wall = (performance.now() - t0) / 1000;
      const down = proxy.counts().down;
      log(`1: ${PODS} pods: ${(down / MB).toFixed(2)} MB down, ${wall.toFixed(2)} s`);
      const actions: Record<string, number> = {};
      for (const p of pods) actions[`${p.json.action}/${p.json.snapshotForm}`] = (actions[`${p.json.action}/${p.json.snapshotForm}`] ?? 0) + 1;
      let clean = 0;
      let identical = 0;
      const problems: string[] = [];
      for (const p of pods) {
        const overlay = String(p.json.overlay);
        const check = qemuImg(['check', overlay]);
        const cmp = qemuImg(['compare', overlay, img.g2]);
        if (check.ok) clean++;
        else problems.push(`${overlay}: check: ${check.said}`);
        if (cmp.ok) identical++;
        else problems.push(`${overlay}: compare: ${cmp.said}`);
      }
      log(`1: overlays: ${clean}/${PODS} clean, ${identical}/${PODS} identical to games-v2${problems.length ? `\n  ${problems.join('\n  ')}` : ''}`);
      const detail = { actions, singleJson: single.json, pods: pods.map((p) => ({ wall: p.seconds, seconds: p.json.seconds, action: p.json.action })), bytesDownloadedReported: pods.reduce((n, p) => n + Number(p.json.bytesDownloaded ?? 0), 0), singleBytesDownloadedReported: single.json.bytesDownloaded };
      out.push(
        { id: '1a', name: `${PODS} pods: bytes down`, unit: 'bytes', value: down, reference: singleDown, referenceName: 'one pod alone', goal: 'ratio <= 1.2', pass: down <= 1.2 * singleDown, detail },
        { id: '1b', name: `${PODS} pods: wall time`, unit: 's', value: wall, reference: single.seconds, referenceName: 'one pod alone', goal: 'ratio <= 2', pass: wall <= 2 * single.seconds },
        { id: '1c', name: `${PODS} pods: overlays clean+identical`, unit: 'count', value: Math.min(clean, identical), reference: PODS, referenceName: 'pods', goal: `${PODS}/${PODS}`, pass: clean === PODS && identical === PODS, detail: { clean, identical, problems } },
      );
    } else {
      await podInit(hostOf(srv), many, 'loco-emulator-0', 'win98-games-v2');
    }
    if (ONLY.has('2')) {
      log(`2: ${RESTARTS} restarts of loco-emulator-0, and snapyard --help (no --version: start-up)`);
      const restarts: Array<{ seconds: number; down: number; bytesDownloaded: number; action: unknown; overlayAction: unknown }> = [];
      const startup: number[] = [];
      for (let i = 0; i < RESTARTS; i++) {
        startup.push((await cli(['--help'])).seconds);
        proxy.reset();
        const r = await podInit(viaProxy, many, 'loco-emulator-0', 'win98-games-v2');
        restarts.push({ seconds: r.seconds, down: proxy.counts().down, bytesDownloaded: Number(r.json.bytesDownloaded), action: r.json.action, overlayAction: r.json.overlayAction });
      }
      log(`2: ${JSON.stringify(restarts)}; --help ${startup.map((s) => s.toFixed(3)).join(' ')} s`);
      const reused = restarts.every((r) => r.action === 'reused' && r.overlayAction === 'reused');
      const maxData = Math.max(...restarts.map((r) => r.bytesDownloaded));
      const wall = median(restarts.map((r) => r.seconds));
      out.push(
        { id: '2a', name: 'restart: bytes downloaded', unit: 'bytes', value: maxData, reference: null, referenceName: `wire down ${Math.max(...restarts.map((r) => r.down))} B (manifest check)`, goal: '0, reused', pass: maxData === 0 && reused, detail: { restarts } },
        { id: '2b', name: 'restart: wall time (median)', unit: 's', value: wall, reference: median(startup), referenceName: 'snapyard --help', goal: '< 1 s', pass: wall < 1, detail: { max: Math.max(...restarts.map((r) => r.seconds)), startup } },
      );
    }
  } finally {
    await proxy?.close();
    await srv.stop();
    for (const d of ['data-pods', 'node-many', 'node-one', 'push-cache']) drop(join(tmp, d));
  }
}

/** Figures 3 and 4: store growth of old-style images against snapyard push, fresh servers. */
async function importFigures(tmp: string, out: Figure[]): Promise<void> {
  const ref = { g1: 0, g2: 0 };
  await onFreshServer(tmp, 'data-push', async (srv, mark) => {
    log('3/4: reference: snapyard push of games-v1 then games-v2 into a fresh server');
    await push(srv.url(), 'win98-games-v1', img.g1, join(tmp, 'ref-cache'));
    ref.g1 = await mark();
    await push(srv.url(), 'win98-games-v2', img.g2, join(tmp, 'ref-cache'));
    ref.g2 = await mark();
    log(`3/4: push growth games-v1 ${(ref.g1 / MB).toFixed(2)} MB, games-v2 ${(ref.g2 / MB).toFixed(2)} MB`);
  }, KEEP);
  const work = join(tmp, 'skopeo');
  mkdirSync(work, { recursive: true });
  const skopeo = await skopeoIn(work);
  const packaged = async (compression: 'gzip' | 'none') => {
    const layout = join(tmp, `layout-${compression}`);
    const sizes: Record<string, number> = {};
    for (const [tag, f] of [['win98-games-v1', img.g1], ['win98-games-v2', img.g2]] as const) {
      log(`3/4: packaging ${tag} as a ${compression} tar layer`);
      sizes[tag] = await addOldImage(layout, tag, f, compression);
    }
    return { layout, sizes };
  };
  if (ONLY.has('3')) {
    const { layout, sizes } = await packaged('gzip');
    const dr = await startDockerRegistry();
    try {
      for (const tag of ['win98-games-v1', 'win98-games-v2']) {
        await skopeo('copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-no-creds', `oci:${layout}:${tag}`, `docker://${dr.host}/old/win98:${tag}`);
      }
      drop(layout);
      await onFreshServer(tmp, 'data-import', async (srv, mark) => {
        log('3: snapyard import of both from docker-registry into a fresh server');
        for (const tag of ['win98-games-v1', 'win98-games-v2']) {
          await cli(['import', `docker://${dr.host}/old/win98:${tag}`, `${REPO}:${tag}`, '--src-insecure', '--registry', srv.url(), '--cache', join(tmp, 'import-cache'), '--tmp-dir', tmp, '--json']);
        }
        const grew = await mark();
        const reference = ref.g1 + ref.g2;
        out.push({ id: '3', name: 'import gzip images: store growth', unit: 'bytes', value: grew, reference, referenceName: 'snapyard push of the files', goal: 'ratio <= 1.1', pass: grew <= 1.1 * reference, detail: { gzipLayers: sizes } });
      }, KEEP);
    } finally {
      await dr.stop();
    }
  }
  if (ONLY.has('4')) {
    const { layout, sizes } = await packaged('none');
    await onFreshServer(tmp, 'data-skopeo', async (srv, mark) => {
      const copy = (tag: string) => skopeo('copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-no-creds', `oci:${layout}:${tag}`, `docker://${srv.host()}/seed/win98:${tag}`);
      log('4: skopeo copy of games-v1 then games-v2 (uncompressed tar layers) into a fresh server');
      await copy('win98-games-v1');
      const g1 = await mark();
      await copy('win98-games-v2');
      const grew = await mark();
      out.push({ id: '4', name: 'skopeo tar layer v2: store growth', unit: 'bytes', value: grew, reference: ref.g2, referenceName: 'snapyard push of games-v2 after v1', goal: 'ratio <= 1.2', pass: grew <= 1.2 * ref.g2, detail: { tarLayers: sizes, v1Growth: g1, pushV1Growth: ref.g1 } });
    }, KEEP);
    drop(layout);
  }
}

const tmp = mkdtempSync(join(tmpdir(), 'snapyard-podinit-bench-'));
const figures: Figure[] = [];
try {
  log(`corpus ${corpus}; scratch ${tmp}; CLI from ${build.runs}`);
  if (ONLY.has('1') || ONLY.has('2')) await podFigures(tmp, figures);
  if (ONLY.has('3') || ONLY.has('4')) await importFigures(tmp, figures);
} finally {
  if (KEEP) log(`kept ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
}
const lines = figureLines(figures);
if (JSON_OUT) {
  log(lines.join('\n'));
  console.log(JSON.stringify({ corpus, pods: PODS, restarts: RESTARTS, cli: build.runs, figures, pass: figures.every((f) => f.pass) }));
} else {
  console.log(lines.join('\n'));
}
process.exitCode = figures.every((f) => f.pass) ? 0 : 1;

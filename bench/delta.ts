/**
 * Issue 3: bytes on the wire (counted at the socket, by a proxy in front of the
 * server) and wall time of snapyard pushes and pulls, against casync and
 * `zstd -3 --patch-from` in the same run, with the client's and server's peak RSS.
 *
 *   npx tsx bench/delta.ts FILES_DIR [--runs N] [--only A,B,...] [--no-verify]
 *                                    [--references-only] [--json] [--keep]
 *
 * FILES_DIR holds win98-base-v1.qcow2, win98-games-v1.qcow2, win98-games-v2.qcow2
 * and win98-games-v1.shuffled.qcow2 (the corpus generator's output). Scenarios:
 *   A push of games-v2 after games-v1 (the server holds base-v1 and games-v1)
 *   B overlay pull of games-v2 over base-v1, with a client cache holding games-v1
 *   C overlay pull of games-v1 over base-v1, empty cache
 *   D store growth when the shuffled copy is pushed after games-v1
 *   E full pull of games-v2, empty cache
 * Each run starts a fresh server (its own process) and pushes base-v1 and games-v1
 * through the CLI (not counted), then runs the selected scenarios in that order;
 * the CLI talks to the wire proxy, its peak RSS comes from /usr/bin/time. Pulled
 * images are checked with `qemu-img compare` (--no-verify skips it). Times are
 * the best of --runs (default 1), bytes and RSS the worst. Markdown on stdout
 * (--json: one JSON object instead), progress on stderr. --references-only runs
 * just casync and zstd. --keep leaves the scratch directory behind.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { MB, duBytes, need, rssOf, startServer } from './lib.js';
import { startWireProxy } from './wire-proxy.js';
import { HAS_TIME, cliBuildNote, runCli, type CliRun } from './delta-cli.js';
import { CASYNC_ARGS, runReferences, type Images, type RefFigure, type RefKey, type ScenarioId } from './delta-refs.js';
import { allTargets, markdown, type Refs, type SnapFigure, type Snaps } from './delta-report.js';

const USAGE = 'usage: npx tsx bench/delta.ts FILES_DIR [--runs N] [--only A,B,C,D,E] [--no-verify] [--references-only] [--json] [--keep]';
const args = process.argv.slice(2);
const valued = new Set(['--runs', '--only']);
const dirArg = args.find((a, i) => !a.startsWith('--') && !valued.has(args[i - 1] ?? ''));
const flag = (name: string) => args.includes(name);
const value = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const RUNS = Number(value('--runs') ?? 1);
const ALL: ScenarioId[] = ['A', 'B', 'C', 'D', 'E'];
const ONLY = (value('--only')?.toUpperCase().split(',') ?? ALL) as ScenarioId[];
if (!dirArg || !Number.isInteger(RUNS) || RUNS < 1 || ONLY.some((s) => !ALL.includes(s))) {
  console.error(USAGE);
  process.exit(2);
}
const only = new Set(ONLY);
const selected = ALL.filter((s) => only.has(s));
const REFS_ONLY = flag('--references-only');
const VERIFY = !flag('--no-verify') && !REFS_ONLY;
const JSON_OUT = flag('--json');
const dir = resolve(dirArg);
const img: Images = {
  base: join(dir, 'win98-base-v1.qcow2'),
  g1: join(dir, 'win98-games-v1.qcow2'),
  g2: join(dir, 'win98-games-v2.qcow2'),
  shuffled: join(dir, 'win98-games-v1.shuffled.qcow2'),
};
for (const f of Object.values(img)) {
  if (!existsSync(f)) {
    console.error(`missing ${f}\n${USAGE}`);
    process.exit(2);
  }
}
need('casync', 'casync');
need('zstd', 'zstd');
if (VERIFY) need('qemu-img', 'qemu-utils');
const log = (s: string) => process.stderr.write(`${s}\n`);
const build = cliBuildNote();
if (!REFS_ONLY && build.warning) log(`warning: ${build.warning}`);
if (!REFS_ONLY && !HAS_TIME) log('warning: no /usr/bin/time (apt-get install -y time): client peak RSS is VmHWM polled every 20 ms');

/** qemu-img compare OUT ORIG (through OUT's backing chain); logs the output's size and backing file. */
function verify(id: ScenarioId, out: string, orig: string): boolean | null {
  if (!VERIFY) return null;
  let backing = '';
  try {
    const info = JSON.parse(execFileSync('qemu-img', ['info', '-U', '--output=json', out], { encoding: 'utf8' })) as Record<string, unknown>;
    backing = String(info['full-backing-filename'] ?? info['backing-filename'] ?? '');
  } catch { /* compare reports it */ }
  const r = spawnSync('qemu-img', ['compare', '-U', out, orig], { encoding: 'utf8' });
  const msg = r.status === 0 ? 'identical' : r.status === 1 ? 'DIFFERS' : `error: ${(r.stderr || r.stdout).trim()}`;
  log(`  ${id}: output ${(statSync(out).size / MB).toFixed(2)} MB${backing ? `, backing ${backing}` : ''}; qemu-img compare: ${msg}`);
  return r.status === 0;
}

function mergeRef(a: RefFigure | undefined, x: RefFigure): RefFigure {
  if (!a) return x;
  const min = (p: number | undefined, q: number | undefined) => p === undefined ? q : q === undefined ? p : Math.min(p, q);
  return {
    bytes: Math.max(a.bytes, x.bytes),
    seconds: Math.min(a.seconds, x.seconds),
    applySeconds: min(a.applySeconds, x.applySeconds),
    indexBytes: a.indexBytes === undefined ? x.indexBytes : Math.max(a.indexBytes, x.indexBytes ?? 0),
  };
}

function mergeSnap(a: SnapFigure | undefined, x: SnapFigure): SnapFigure {
  if (!a) return x;
  return {
    seconds: Math.min(a.seconds, x.seconds),
    up: Math.max(a.up, x.up),
    down: Math.max(a.down, x.down),
    clientRss: Math.max(a.clientRss, x.clientRss),
    serverRss: Math.max(a.serverRss, x.serverRss),
    storeGrowth: a.storeGrowth === undefined || x.storeGrowth === undefined ? x.storeGrowth : Math.max(a.storeGrowth, x.storeGrowth),
    verified: a.verified === false || x.verified === false ? false : x.verified ?? a.verified,
    summary: x.summary,
  };
}

/** One run of the snapyard half on a fresh server; returns the scenarios' figures and the server's VmHWM. */
async function snapyardRun(tmp: string): Promise<{ snaps: Snaps; serverPeak: number }> {
  const data = join(tmp, 'data');
  const srv = await startServer(data);
  const proxy = await startWireProxy(Number(new URL(srv.url).port));
  const snaps: Snaps = {};
  try {
    const cli = (a: string[]) => runCli(a, proxy);
    const push = (ref: string, file: string) => cli(['push', ref, file, '--json']);
    const pull = (ref: string, out: string, extra: string[]) => cli(['pull', ref, '-o', out, ...extra, '--json']);
    const freshDir = (name: string) => {
      const d = join(tmp, name);
      mkdirSync(d, { recursive: true });
      return d;
    };
    /** Runs one counted command; pushes also get the data dir's growth, pulls a qemu-img compare. */
    const measure = async (id: ScenarioId, fn: () => Promise<CliRun>, check?: { out: string; orig: string }) => {
      log(`${id}: ...`);
      srv.resetPeak();
      const before = check ? 0 : duBytes(data);
      const r = await fn();
      const f: SnapFigure = {
        seconds: r.seconds,
        up: r.wire.up,
        down: r.wire.down,
        clientRss: r.peakRss,
        serverRss: srv.sampledPeak(),
        summary: r.json,
      };
      if (check) {
        f.verified = verify(id, check.out, check.orig);
        rmSync(check.out, { force: true });
      } else {
        f.storeGrowth = duBytes(data) - before;
      }
      log(`${id}: wire up ${(f.up / MB).toFixed(3)} MB, down ${(f.down / MB).toFixed(3)} MB, ${f.seconds.toFixed(2)} s, client RSS ${(f.clientRss / MB).toFixed(0)} MB${f.storeGrowth !== undefined ? `, store +${(f.storeGrowth / MB).toFixed(2)} MB` : ''}`);
      snaps[id] = f;
    };
    log('setup: push base-v1, games-v1');
    await push('win98:base-v1', img.base);
    await push('win98:games-v1', img.g1);
    if (only.has('A')) await measure('A', () => push('win98:games-v2', img.g2));
    else if (only.has('B') || only.has('E')) {
      log('setup: push games-v2');
      await push('win98:games-v2', img.g2);
    }
    if (only.has('B')) {
      const cache = freshDir('cache-B');
      log('setup: warm the cache with games-v1');
      const warm = join(tmp, 'warm-games-v1.qcow2');
      await pull('win98:games-v1', warm, ['--cache', cache]);
      rmSync(warm, { force: true });
      const out = join(tmp, 'B-games-v2.qcow2');
      await measure('B', () => pull('win98:games-v2', out, ['--overlay', '--base', img.base, '--cache', cache]), { out, orig: img.g2 });
    }
    if (only.has('C')) {
      const out = join(tmp, 'C-games-v1.qcow2');
      await measure('C', () => pull('win98:games-v1', out, ['--overlay', '--base', img.base, '--cache', freshDir('cache-C')]), { out, orig: img.g1 });
    }
    if (only.has('D')) await measure('D', () => push('win98:games-v1-shuffled', img.shuffled));
    if (only.has('E')) {
      const out = join(tmp, 'E-games-v2.qcow2');
      await measure('E', () => pull('win98:games-v2', out, ['--cache', freshDir('cache-E')]), { out, orig: img.g2 });
    }
    return { snaps, serverPeak: Math.max(rssOf(srv.pid).peak, srv.sampledPeak()) };
  } finally {
    await proxy.close();
    await srv.stop();
  }
}

let refs: Refs = {};
let snaps: Snaps = {};
let serverPeak: number | undefined;
const perRun: Array<{ refs: Refs; snaps?: Snaps; serverPeak?: number }> = [];
for (let run = 0; run < RUNS; run++) {
  const tmp = mkdtempSync(join(tmpdir(), 'snapyard-delta-'));
  try {
    log(`run ${run + 1}/${RUNS} in ${tmp}: references`);
    mkdirSync(join(tmp, 'refs'));
    const r = runReferences(join(tmp, 'refs'), img, only, log);
    for (const [k, v] of Object.entries(r) as Array<[RefKey, RefFigure]>) refs[k] = mergeRef(refs[k], v);
    const entry: (typeof perRun)[number] = { refs: r };
    if (!REFS_ONLY) {
      log(`run ${run + 1}/${RUNS}: snapyard`);
      const s = await snapyardRun(tmp);
      for (const [k, v] of Object.entries(s.snaps) as Array<[ScenarioId, SnapFigure]>) snaps[k] = mergeSnap(snaps[k], v);
      serverPeak = Math.max(serverPeak ?? 0, s.serverPeak);
      Object.assign(entry, s);
    }
    perRun.push(entry);
  } finally {
    if (flag('--keep')) log(`kept ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

const version = (cmd: string, a: string[]) => execFileSync(cmd, a, { encoding: 'utf8' }).trim().split('\n')[0]!;
const sizes = Object.fromEntries(Object.entries(img).map(([k, f]) => [k, statSync(f).size]));
if (JSON_OUT) {
  console.log(JSON.stringify({ dir, runs: RUNS, only: selected, cli: build.runs, referencesOnly: REFS_ONLY, sizes, references: refs, snapyard: snaps, serverPeakRss: serverPeak, targets: REFS_ONLY ? [] : allTargets(selected, snaps, refs), perRun }));
} else {
  const header = [
    `## bench/delta.ts: wire bytes and wall time of pushes and pulls (issue 3)`,
    '',
    `Corpus ${dir}: base-v1 ${(sizes.base! / MB).toFixed(1)} MB, games-v1 ${(sizes.g1! / MB).toFixed(1)} MB, games-v2 ${(sizes.g2! / MB).toFixed(1)} MB, shuffled ${(sizes.shuffled! / MB).toFixed(1)} MB (MB = 10^6 bytes).`,
    `${RUNS === 1 ? '1 run.' : `${RUNS} runs: times are the best, bytes and RSS the worst.`} ${REFS_ONLY ? 'References only.' : `snapyard CLI from ${build.runs}${build.warning ? ` (**${build.warning}**)` : ''}; wire = TCP payload both ways through a counting proxy (HTTP headers included); client RSS ${HAS_TIME ? 'from /usr/bin/time %M' : 'VmHWM polled'}; server RSS sampled every 50 ms during the command.`}`,
    `${version('casync', ['--version'])} (\`${CASYNC_ARGS.join(' ')}\`), zstd ${/v[\d.]+/.exec(version('zstd', ['--version']))?.[0] ?? ''} (patches: \`-3 --long=31\`). The issue's byte targets are for the bench corpus.`,
  ];
  console.log(markdown(selected, snaps, refs, header, serverPeak, REFS_ONLY));
}

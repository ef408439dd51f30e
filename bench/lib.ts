/** Shared helpers for the benchmarks (not tests: run on demand with `npx tsx bench/<name>.ts`). */
import { spawn, spawnSync, execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { basename, join, resolve } from 'node:path';
import pg from 'pg';

export const ROOT = resolve(import.meta.dirname, '..');
export const BIN = join(ROOT, 'bin', 'snapyard.js');
export const MB = 1e6;

export async function freePort(): Promise<number> {
  return new Promise((res) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

/** The container image's memory settings (Dockerfile: malloc, V8's young generation): benches run servers and mounts with them unless the caller sets its own. */
export const IMAGE_ENV = { MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_ARENA_MAX: '2', NODE_OPTIONS: '--max-semi-space-size=4' } as const;

/** Peak and current RSS of a process, from /proc (bytes). */
export function rssOf(pid: number): { peak: number; current: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { peak: kb('VmHWM'), current: kb('VmRSS') };
}

export interface ServerProc {
  url: string;
  port: number;
  pid: number;
  child: ChildProcess;
  /** What it printed on stdout so far (its JSON log lines; kept in DATA_DIR.log). */
  log(): string;
  /** Highest RSS sampled (every 50 ms) since start or the last reset. */
  sampledPeak(): number;
  resetPeak(): void;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** Starts `snapyard serve` as its own process (so its memory is its own); killed if the bench dies. `env` is added to the bench's environment. */
export async function startServer(dataDir: string, extra: string[] = [], env: Record<string, string> = {}): Promise<ServerProc> {
  const port = await freePort();
  const logFile = `${resolve(dataDir)}.log`;
  const logFd = openSync(logFile, 'a');
  // BENCH_SERVER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the server process.
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const child = spawn(process.execPath, [...nodeArgs, BIN, 'serve', '--data', dataDir, '--host', '127.0.0.1', '--port', String(port), ...extra], {
    // Its log goes to a file, not a pipe: a bench blocked in execFileSync would stop reading a pipe and stall the server.
    stdio: ['ignore', logFd, 'inherit'],
    env: { ...IMAGE_ENV, ...process.env, ...env },
  });
  closeSync(logFd);
  const out = () => readFileSync(logFile, 'utf8');
  children.add(child);
  child.once('exit', () => children.delete(child));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`snapyard serve exited ${child.exitCode}: ${out().slice(-2000)}`);
    try {
      if ((await fetch(`${url}/v2/`)).ok) break;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  let peak = 0;
  const timer = setInterval(() => {
    try { peak = Math.max(peak, rssOf(child.pid!).current); } catch { /* exited */ }
  }, 50);
  return {
    url,
    port,
    pid: child.pid!,
    child,
    log: out,
    sampledPeak: () => peak,
    resetPeak: () => { peak = 0; },
    stop: () => new Promise<void>((res) => {
      clearInterval(timer);
      if (child.exitCode !== null || child.signalCode !== null) return res();
      child.once('exit', () => res());
      child.kill('SIGTERM');
    }),
  };
}

export async function timed<T>(fn: () => Promise<T>): Promise<{ seconds: number; result: T }> {
  const t0 = performance.now();
  const result = await fn();
  return { seconds: (performance.now() - t0) / 1000, result };
}

export function timedCmd(cmd: string, args: string[]): number {
  const t0 = performance.now();
  execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  return (performance.now() - t0) / 1000;
}

/** Bytes of all files under a directory (apparent sizes). */
export function duBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += duBytes(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

export function need(tool: string, pkg: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    throw new Error(`${tool} is missing: apt-get install -y ${pkg} (or bash scripts/deps.sh system)`);
  }
}

export const fmt = (bytes: number, seconds: number) => `${(bytes / MB / seconds).toFixed(1)} MB/s`;

/** Bytes and number of the pack files in a directory (a local store's data/store/packs). */
export function packDirBytes(dir: string): { packs: number; bytes: number } {
  let packs = 0;
  let bytes = 0;
  for (const f of readdirSync(dir)) {
    packs++;
    bytes += statSync(join(dir, f)).size;
  }
  return { packs, bytes };
}

/** A corpus directory's *.qcow2 file names, base-v1 first, the others by name. */
export function corpusImages(dir: string): string[] {
  const first = (f: string) => f.includes('base-v1.qcow2');
  return readdirSync(dir).filter((f) => f.endsWith('.qcow2')).sort((a, b) => (first(a) ? -1 : first(b) ? 1 : a.localeCompare(b)));
}

/** The tag a corpus file is pushed as: its name without "win98-" and ".qcow2", dots as dashes (games-v2.overlay -> games-v2-overlay). */
export const tagOf = (f: string) => basename(f, '.qcow2').replace(/^win98-/, '').replace(/\./g, '-');

/**
 * Removes the manifests the tags point at, by digest (plain OCI DELETE), so gc
 * can collect them (removing a tag only untags). Answers tag -> digest; a
 * digest already removed through another tag is not an error.
 */
export async function removeByDigest(url: string, repo: string, tags: string[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const tag of tags) {
    const d = (await fetch(`${url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD' })).headers.get('docker-content-digest');
    if (!d) throw new Error(`${repo}:${tag} has no manifest`);
    out.set(tag, d);
  }
  for (const d of new Set(out.values())) {
    const r = await fetch(`${url}/v2/${repo}/manifests/${d}`, { method: 'DELETE' });
    if (r.status !== 202 && r.status !== 404) throw new Error(`DELETE ${repo}@${d}: HTTP ${r.status}`);
  }
  return out;
}

/** S3 (Ceph RGW) and PostgreSQL for a bench: from the environment, or throwaway ones started with scripts/services. */
export interface BenchServices {
  /** s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=... */
  s3: string;
  s3Credentials: { accessKeyId: string; secretAccessKey: string };
  /** postgres://postgres@127.0.0.1:PORT/DB */
  postgres: string;
  /** Stops what this call started (nothing when both came from the environment). */
  stop(): Promise<void>;
}

function runScript(script: string, env: Record<string, string>): Promise<string> {
  return new Promise((res, rej) => {
    execFile('bash', [join(ROOT, 'scripts', 'services', script)], { env: { ...process.env, ...env }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`scripts/services/${script} failed: ${stderr.slice(-4000)}`));
      else res(stdout);
    });
  });
}

/** `export NAME='value'` lines (what the up scripts print) as a record. */
function exportsOf(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/^export ([A-Z_][A-Z0-9_]*)='([^']*)'$/gm)].map((m) => [m[1]!, m[2]!]));
}

/** SNAPYARD_TEST_S3 (+ AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and SNAPYARD_TEST_POSTGRES when set, else scripts/services/{rgw,pg}-up.sh in fresh /var/tmp directories. */
export async function benchServices(log: (s: string) => void = () => {}): Promise<BenchServices> {
  const started: Array<{ down: string; dirVar: string; dir: string }> = [];
  const stop = async () => {
    for (const s of started.splice(0)) await runScript(s.down, { [s.dirVar]: s.dir });
  };
  // A bench that dies or is interrupted still stops them (nothing asynchronous runs in an 'exit' handler).
  process.once('exit', () => {
    for (const s of started) spawnSync('bash', [join(ROOT, 'scripts', 'services', s.down), s.dir], { stdio: 'ignore' });
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
  const up = async (name: 'rgw' | 'pg', dirVar: string): Promise<Record<string, string>> => {
    const dir = join('/var/tmp', `snapyard-bench-${name}-${process.pid}`);
    started.push({ down: `${name}-down.sh`, dirVar, dir });
    const t0 = performance.now();
    const vars = exportsOf(await runScript(`${name}-up.sh`, { [dirVar]: dir }));
    log(`${name} started in ${((performance.now() - t0) / 1000).toFixed(1)} s (${dir})`);
    return vars;
  };
  try {
    const s3Vars = process.env.SNAPYARD_TEST_S3 ? process.env as Record<string, string> : await up('rgw', 'CEPH_DIR');
    const pgVars = process.env.SNAPYARD_TEST_POSTGRES ? process.env as Record<string, string> : await up('pg', 'PGDIR');
    return {
      s3: s3Vars.SNAPYARD_TEST_S3!,
      s3Credentials: { accessKeyId: s3Vars.AWS_ACCESS_KEY_ID!, secretAccessKey: s3Vars.AWS_SECRET_ACCESS_KEY! },
      postgres: pgVars.SNAPYARD_TEST_POSTGRES!,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** A fresh PostgreSQL schema (`NAME_` + random hex) on the server of `base`: its URL (search_path) and how to drop it. */
export async function freshSchema(base: string, name = 'bench'): Promise<{ url: string; drop: () => Promise<void> }> {
  const schema = `${name}_${randomBytes(6).toString('hex')}`;
  const sql = async (q: string) => {
    const c = new pg.Client(base);
    await c.connect();
    try {
      await c.query(q);
    } finally {
      await c.end();
    }
  };
  await sql(`CREATE SCHEMA ${schema}`);
  const u = new URL(base);
  u.searchParams.set('options', `-c search_path=${schema}`);
  return { url: u.toString(), drop: () => sql(`DROP SCHEMA ${schema} CASCADE`) };
}

const TICKS = 100; // USER_HZ: /proc's clock ticks per second on Linux

/** CPU seconds (user + system) a process has used so far, from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS;
}

/** The machine's CPU time so far, from /proc/stat: busy and total seconds summed over all cores. */
export function machineCpu(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: (total - f[3]! - (f[4] ?? 0)) / TICKS, total: total / TICKS };
}

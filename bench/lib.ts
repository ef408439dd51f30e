/** Shared helpers for the benchmarks (not tests: run on demand with `npx tsx bench/<name>.ts`). */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';

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

/** Peak and current RSS of a process, from /proc (bytes). */
export function rssOf(pid: number): { peak: number; current: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { peak: kb('VmHWM'), current: kb('VmRSS') };
}

export interface ServerProc {
  url: string;
  pid: number;
  child: ChildProcess;
  /** Highest RSS sampled (every 50 ms) since start or the last reset. */
  sampledPeak(): number;
  resetPeak(): void;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** Starts `snapyard serve` as its own process (so its memory is its own); killed if the bench dies. */
export async function startServer(dataDir: string, extra: string[] = []): Promise<ServerProc> {
  const port = await freePort();
  // BENCH_SERVER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the server process.
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const child = spawn(process.execPath, [...nodeArgs, BIN, 'serve', '--data', dataDir, '--host', '127.0.0.1', '--port', String(port), ...extra], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
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
    pid: child.pid!,
    child,
    sampledPeak: () => peak,
    resetPeak: () => { peak = 0; },
    stop: () => new Promise<void>((res) => {
      clearInterval(timer);
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

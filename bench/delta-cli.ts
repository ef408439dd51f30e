/**
 * Runs one `snapyard` CLI command for bench/delta.ts: wall time, the client
 * process's peak RSS, the bytes it moved through the wire proxy, and the JSON
 * object it printed on stdout.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, ROOT, rssOf } from './lib.js';
import type { WireCounts, WireProxy } from './wire-proxy.js';

export interface CliRun {
  args: string[];
  seconds: number;
  /** Peak RSS of the client process (bytes): /usr/bin/time's %M, else VmHWM polled every 20 ms. */
  peakRss: number;
  wire: WireCounts;
  /** The JSON object the command printed last on stdout (null if none). */
  json: Record<string, unknown> | null;
}

const TIME = '/usr/bin/time';
export const HAS_TIME = existsSync(TIME);

function lastJson(stdout: string): Record<string, unknown> | null {
  const t = stdout.trim();
  if (!t) return null;
  const candidates = [t, t.slice(t.lastIndexOf('\n{') + 1)];
  for (const c of candidates) {
    try {
      const v: unknown = JSON.parse(c);
      if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    } catch { /* next */ }
  }
  return null;
}

/** `node bin/snapyard.js ARGS --registry http://127.0.0.1:PROXY`; throws with the stderr tail on failure. */
export async function runCli(args: string[], proxy: WireProxy): Promise<CliRun> {
  const full = [...args, '--registry', `http://127.0.0.1:${proxy.port}`];
  const scratch = mkdtempSync(join(tmpdir(), 'snapyard-cli-'));
  const rssFile = join(scratch, 'maxrss');
  const [cmd, argv] = HAS_TIME
    ? [TIME, ['-f', '%M', '-o', rssFile, process.execPath, BIN, ...full]]
    : [process.execPath, [BIN, ...full]];
  proxy.reset();
  const t0 = performance.now();
  const child = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
  child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-4000); });
  let polled = 0;
  const poll = HAS_TIME ? undefined : setInterval(() => {
    try { polled = Math.max(polled, rssOf(child.pid!).peak); } catch { /* exited */ }
  }, 20);
  const code = await new Promise<number | null>((res) => child.once('close', (c) => res(c)));
  const seconds = (performance.now() - t0) / 1000;
  const wire = proxy.counts();
  if (poll) clearInterval(poll);
  const peakRss = HAS_TIME ? Number(readFileSync(rssFile, 'utf8').trim().split('\n').pop()) * 1024 : polled;
  rmSync(scratch, { recursive: true, force: true });
  if (code !== 0) {
    throw new Error(`snapyard ${full.join(' ')} exited ${code}:\n${stderr.trim()}`);
  }
  return { args, seconds, peakRss, wire, json: lastJson(stdout) };
}

function newest(dir: string): number {
  let t = 0;
  if (!existsSync(dir)) return t;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

/** Which code bin/snapyard.js will run, and a warning when dist/ is older than the sources it is built from. */
export function cliBuildNote(): { runs: string; warning?: string } {
  const dist = join(ROOT, 'dist', 'cli', 'main.js');
  if (process.env.SNAPYARD_FROM_SOURCE === '1' || !existsSync(dist)) {
    return { runs: 'sources through tsx', warning: 'the CLI runs through tsx (no dist/ or SNAPYARD_FROM_SOURCE=1): times and client RSS include compiling TypeScript; `npm run build` first' };
  }
  const src = Math.max(...['cli', 'client', 'server', 'storage'].map((d) => newest(join(ROOT, d))));
  if (src > statSync(dist).mtimeMs) return { runs: 'dist/', warning: 'dist/ is older than the TypeScript sources: `npm run build` first, or the bench measures stale code' };
  return { runs: 'dist/' };
}

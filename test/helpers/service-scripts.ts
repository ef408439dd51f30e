/**
 * Runs scripts/services/{rgw,pg}-{up,down}.sh for the tests (no vitest
 * imports: test/services-setup.ts uses it in vitest's main process).
 */
import { execFile, spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const scripts = resolve(import.meta.dirname, '..', '..', 'scripts', 'services');

/** A service: its directory name in the run, its scripts, the variable directory of its up script, and what it exports. */
export interface ServiceSpec {
  name: 'rgw' | 'pg';
  dirVar: 'CEPH_DIR' | 'PGDIR';
  exports: string[];
}

export const SERVICES: Record<'rgw' | 'pg', ServiceSpec> = {
  rgw: { name: 'rgw', dirVar: 'CEPH_DIR', exports: ['SNAPYARD_TEST_S3', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'] },
  pg: { name: 'pg', dirVar: 'PGDIR', exports: ['SNAPYARD_TEST_POSTGRES'] },
};

function run(script: string, env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile('bash', [join(scripts, script)], { env: { ...process.env, ...env }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

/** `export NAME='value'` lines (what the up scripts print and write to DIR/env) as a record. */
export function parseExports(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/^export ([A-Z_][A-Z0-9_]*)='([^']*)'$/gm)) out[m[1]!] = m[2]!;
  return out;
}

/**
 * Starts a service in `dir` with its up script; on failure stops what was
 * started and throws with the script's output (exit 3: `dir` holds a running
 * instance, left alone).
 */
export async function startService(spec: ServiceSpec, dir: string): Promise<Record<string, string>> {
  const t0 = Date.now();
  const up = await run(`${spec.name}-up.sh`, { [spec.dirVar]: dir });
  if (up.code !== 0) {
    if (up.code !== 3) await stopService(spec, dir);
    throw new Error(`scripts/services/${spec.name}-up.sh failed (exit ${up.code}):\n${up.stderr.slice(-4000)}`);
  }
  process.stderr.write(`services: ${spec.name} started in ${Date.now() - t0} ms (${dir})\n`);
  return parseExports(up.stdout);
}

export async function stopService(spec: ServiceSpec, dir: string): Promise<void> {
  const down = await run(`${spec.name}-down.sh`, { [spec.dirVar]: dir });
  if (down.code !== 0) throw new Error(`scripts/services/${spec.name}-down.sh failed (exit ${down.code}): ${down.stderr}`);
}

/** stopService for process 'exit' handlers (an interrupted run), where nothing asynchronous runs any more. */
export function stopServiceSync(spec: ServiceSpec, dir: string): void {
  spawnSync('bash', [join(scripts, `${spec.name}-down.sh`), dir], { stdio: 'ignore' });
}

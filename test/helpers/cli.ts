import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

export const BIN = resolve(import.meta.dirname, '..', '..', 'bin', 'snapyard.js');

/** The test's environment without the CLI's registry and credential defaults. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const drop = new Set(['SNAPYARD_REGISTRY', 'SNAPYARD_CACHE', 'SNAPYARD_USERNAME', 'SNAPYARD_PASSWORD', 'SNAPYARD_CA_CERT', 'SNAPYARD_INSECURE', 'REGISTRY_AUTH_FILE', 'DOCKER_CONFIG']);
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.has(k))), ...extra };
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `snapyard ARGS` to completion (never rejects: check `code`), with optional standard input. */
export function runCli(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: opts.env ?? cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', fail);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** Like runCli, but rejects with the stderr when the exit code is not 0. */
export async function cliOk(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<string> {
  const r = await runCli(args, opts);
  if (r.code !== 0) throw new Error(`snapyard ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}


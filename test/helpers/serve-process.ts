/**
 * `snapyard serve` as a child process (bin/snapyard.js, compiled dist/), for
 * end-to-end tests of its flags and settings: started on a loopback port of
 * its own choosing, answered once its start log line says it is serving.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { BIN, cleanEnv } from './cli.js';

export interface ServeProcess {
  child: ChildProcess;
  url: string;
  /** Everything it printed so far (stdout and stderr). */
  log: () => string;
  /** The start log line, parsed. */
  startLine: () => Record<string, unknown>;
  /** SIGTERM; answers the exit code. */
  stop: () => Promise<number | null>;
}

/** `snapyard serve ARGS --host 127.0.0.1 --port PORT` (default 0: any) with `env` added to a clean environment; rejects with its output if it exits first. */
export async function spawnServe(args: string[], env: Record<string, string> = {}, port = 0): Promise<ServeProcess> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args, '--host', '127.0.0.1', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(env) });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  const up = await Promise.race([
    (async () => {
      while (!/serving[^\n]*\n/.test(out)) await new Promise((r) => setTimeout(r, 100));
      return true;
    })(),
    exited.then(() => false),
  ]);
  if (!up) throw new Error(`snapyard serve exited: ${out}`);
  const startLine = () => JSON.parse(out.split('\n').find((l) => l.includes('serving'))!) as Record<string, unknown>;
  return {
    child,
    url: `http://127.0.0.1:${startLine().port as number}`,
    log: () => out,
    startLine,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** A loopback port free right now (for a server that must know its own address before it starts). */
export async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/**
 * `snapyard mount REF --socket SOCKET --json ARGS...` as a child process for
 * tests: started and awaited until it listens (its `listening` line), its
 * JSON event lines collected, stopped with SIGTERM (returning its `stopped`
 * line: what it fetched) or killed with -9.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { FetcherStats } from '../../client/lazy/chunk-fetcher.js';
import { BIN, cleanEnv } from './cli.js';

export interface MountEvent {
  event: 'listening' | 'ready' | 'prefetched' | 'materialized' | 'trace-pushed' | 'trace-fetched' | 'stopped';
  [k: string]: unknown;
}

/** The `stopped` line: what the mount fetched. */
export type FetchStats = { event: 'stopped' } & FetcherStats;

export interface MountProcess {
  child: ChildProcess;
  listening: MountEvent;
  url(name?: string): string;
  events(): MountEvent[];
  stderr(): string;
  /** Resolves once an event of that kind was printed. */
  waitFor(event: MountEvent['event'], timeoutMs?: number): Promise<MountEvent>;
  stop(): Promise<FetchStats>;
  kill9(): Promise<void>;
}

/** `opts.argv` runs another command that mounts (`pod-init --lazy`) instead of `mount REF --socket SOCKET --json ARGS`. */
export function startMount(ref: string, socket: string, args: string[], opts: { argv?: string[]; env?: Record<string, string> } = {}): Promise<MountProcess> {
  const argv = opts.argv ?? ['mount', ref, '--socket', socket, '--json', ...args];
  const child = spawn(process.execPath, [BIN, ...argv], { env: cleanEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const events: MountEvent[] = [];
  const waiters: Array<() => void> = [];
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    let nl: number;
    while ((nl = out.indexOf('\n')) >= 0) {
      events.push(JSON.parse(out.slice(0, nl)) as MountEvent);
      out = out.slice(nl + 1);
    }
    for (const w of waiters.splice(0)) w();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const waitFor = (event: MountEvent['event'], timeoutMs = 60_000) =>
    new Promise<MountEvent>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`snapyard mount: no ${event} event within ${timeoutMs} ms; stderr: ${err.trim()}`)), timeoutMs);
      const check = () => {
        const e = events.find((x) => x.event === event);
        if (e) {
          clearTimeout(t);
          resolve(e);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          clearTimeout(t);
          reject(new Error(`snapyard mount exited (${child.exitCode ?? child.signalCode}) before ${event}: ${err.trim()}`));
        } else waiters.push(check);
      };
      check();
    });
  child.once('exit', () => {
    for (const w of waiters.splice(0)) w();
  });
  return waitFor('listening').then((listening) => ({
    child,
    listening,
    url: (name = '') => `nbd+unix:///${name}?socket=${socket}`,
    events: () => events,
    stderr: () => err,
    waitFor,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
      const s = events.find((e) => e.event === 'stopped');
      if (!s) throw new Error(`snapyard mount stopped without its stopped line (exit ${child.exitCode}): ${err.trim()}`);
      return s as unknown as FetchStats;
    },
    kill9: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  }));
}

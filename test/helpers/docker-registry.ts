/**
 * A real Docker distribution registry (Debian's `docker-registry`) on a
 * loopback port, with its storage in a temporary directory and htpasswd
 * (bcrypt, made with `htpasswd -B`) auth when users are given. Stopped (and
 * its directory removed) by stop().
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runTool } from './qcow2-fixtures.js';

export interface DockerRegistry {
  /** 127.0.0.1:PORT (for docker:// references) */
  host: string;
  url: string;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? done(a.port) : fail(new Error('no port'))));
    });
  });
}

export async function startDockerRegistry(users: Record<string, string> = {}): Promise<DockerRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'snapyard-docker-registry-'));
  const port = await freePort();
  const lines: string[] = [];
  for (const [u, p] of Object.entries(users)) lines.push((await runTool('htpasswd', ['-nbB', u, p])).stdout.trim());
  writeFileSync(join(dir, 'htpasswd'), `${lines.join('\n')}\n`);
  const auth = lines.length > 0 ? `auth:\n  htpasswd:\n    realm: snapyard-test\n    path: ${join(dir, 'htpasswd')}\n` : '';
  writeFileSync(
    join(dir, 'config.yml'),
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${join(dir, 'data')}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n${auth}`,
  );
  const child: ChildProcess = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) break;
    const ok = await fetch(`${url}/v2/`).then((r) => r.status === 200 || r.status === 401, () => false);
    if (ok) return { host: `127.0.0.1:${port}`, url, stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  await stop();
  throw new Error(`docker-registry did not start: ${stderr}`);
}

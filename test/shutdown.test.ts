/**
 * SIGTERM with a request in flight on a keep-alive connection: the request
 * finishes whole, and the server exits 0 within 10 s (the shutdown grace is
 * 8 s; podman and Kubernetes wait 10 s and 30 s).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { expect, test } from 'vitest';
import { BIN, cleanEnv } from './helpers/cli.js';
import { Oci, prng } from './helpers/oci.js';

test('SIGTERM: the GET in flight on a keep-alive connection completes whole and the server exits 0 within 10 s', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'snapyard-shutdown-'));
  const child = spawn(process.execPath, [BIN, 'serve', '--data', join(dir, 'data'), '--host', '127.0.0.1', '--port', '0'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (process.env.DEBUG_SHUTDOWN) process.stderr.write(d);
        const m = /"port":(\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (c) => reject(new Error(`serve exited ${c}`)));
    });
    const url = `http://127.0.0.1:${port}`;
    const size = 48 * 1024 * 1024;
    const digest = await new Oci(url).pushBlob('shutdown/x', prng(size, 3));
    const pool = new Pool(url, { connections: 1, pipelining: 1 });
    // The connection is kept alive by an earlier request.
    await (await pool.request({ method: 'GET', path: '/v2/' })).body.dump();
    const res = await pool.request({ method: 'GET', path: `/v2/shutdown/x/blobs/${digest}` });
    const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(performance.now())));
    const t0 = performance.now();
    child.kill('SIGTERM');
    let n = 0;
    for await (const p of res.body) {
      n += (p as Buffer).length;
      await new Promise((r) => setTimeout(r, 1)); // a reader slower than the server
    }
    expect(n).toBe(size);
    const t1 = await exited;
    expect(child.exitCode).toBe(0);
    expect((t1 - t0) / 1000).toBeLessThan(10);
    await pool.close();
  } finally {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}, 60_000);

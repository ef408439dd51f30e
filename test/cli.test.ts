import { describe, expect, test } from 'vitest';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createServer } from 'node:net';
import { tempDirs } from './helpers/tmp.js';
import { prng, sha } from './helpers/oci.js';

const BIN = resolve(import.meta.dirname, '..', 'bin', 'snapyard.js');
const run = promisify(execFile);
const tmp = tempDirs('snapyard-cli-');

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

describe('snapyard serve', () => {
  test('serves on --data/--host/--port, logs one line per request, and stops cleanly on SIGTERM', async () => {
    const data = join(tmp(), 'data');
    const port = await freePort();
    const child = spawn(process.execPath, [BIN, 'serve', '--data', data, '--host', '127.0.0.1', '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const deadline = Date.now() + 30_000;
    while (!out.includes('serving') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(out).toContain('serving');
    const base = `http://127.0.0.1:${port}`;
    expect((await fetch(`${base}/v2/`)).status).toBe(200);
    const blob = prng(100_000, 1);
    const put = await fetch(`${base}/v2/cli/test/blobs/uploads/?digest=${sha(blob)}`, { method: 'POST', body: blob });
    expect(put.status).toBe(201);
    expect((await fetch(`${base}/v2/cli/test/blobs/${sha('x')}`)).status).toBe(404);
    await new Promise((r) => setTimeout(r, 200));
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const requests = lines.filter((l) => l.method);
    expect(requests.map((l) => [l.method, l.status])).toEqual([['GET', 200], ['POST', 201], ['GET', 404]]);
    expect(existsSync(join(data, 'meta.db'))).toBe(true);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toContain('stopped');
  });

  test('SNAPYARD_DATA / SNAPYARD_HOST / SNAPYARD_PORT work too, and SIGINT also stops it', async () => {
    const data = join(tmp(), 'envdata');
    const port = await freePort();
    const child = spawn(process.execPath, [BIN, 'serve'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SNAPYARD_DATA: data, SNAPYARD_HOST: '127.0.0.1', SNAPYARD_PORT: String(port) },
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
    const deadline = Date.now() + 30_000;
    while (!out.includes('serving') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect((await fetch(`http://127.0.0.1:${port}/v2/`)).status).toBe(200);
    expect(existsSync(join(data, 'meta.db'))).toBe(true);
    child.kill('SIGINT');
    expect(await exited).toBe(0);
  });
});

describe('crash safety', () => {
  test('kill -9 in the middle of a push: committed blobs still serve, the push can be done again', async () => {
    const data = join(tmp(), 'crash');
    const port = await freePort();
    const start = () => {
      const child = spawn(process.execPath, [BIN, 'serve', '--data', data, '--host', '127.0.0.1', '--port', String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
      const ready = new Promise<void>((res) => {
        let out = '';
        child.stdout.on('data', (b: Buffer) => {
          out += b.toString();
          if (out.includes('serving')) res();
        });
      });
      return { child, ready };
    };
    const base = `http://127.0.0.1:${port}`;
    const a = start();
    await a.ready;
    const first = prng(3_000_000, 3);
    expect((await fetch(`${base}/v2/crash/repo/blobs/uploads/?digest=${sha(first)}`, { method: 'POST', body: first })).status).toBe(201);
    // A large upload, cut by SIGKILL while the server is chunking it.
    const big = prng(40_000_000, 4);
    const session = await fetch(`${base}/v2/crash/repo/blobs/uploads/`, { method: 'POST' });
    const loc = session.headers.get('location')!;
    const patch = fetch(`${base}${loc}`, { method: 'PATCH', body: big }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 150));
    a.child.kill('SIGKILL');
    await new Promise((r) => a.child.once('exit', r));
    await patch;
    const b = start();
    await b.ready;
    const got = await fetch(`${base}/v2/crash/repo/blobs/${sha(first)}`);
    expect(Buffer.from(await got.arrayBuffer()).equals(first)).toBe(true);
    expect((await fetch(`${base}${loc}`)).status).toBe(404);
    expect((await fetch(`${base}/v2/crash/repo/blobs/uploads/?digest=${sha(big)}`, { method: 'POST', body: big })).status).toBe(201);
    const back = await fetch(`${base}/v2/crash/repo/blobs/${sha(big)}`);
    expect(Buffer.from(await back.arrayBuffer()).equals(big)).toBe(true);
    b.child.kill('SIGTERM');
    await new Promise((r) => b.child.once('exit', r));
  });
});

describe('snapyard chunk', () => {
  test('--json prints one object per chunk with offset, length and digest (FastCDC v2020 cuts)', async () => {
    const file = join(tmp(), 'f.bin');
    const data = prng(1_000_000, 2);
    writeFileSync(file, data);
    const { stdout } = await run(process.execPath, [BIN, 'chunk', file, '--json']);
    const chunks = stdout.trim().split('\n').map((l) => JSON.parse(l) as { offset: number; length: number; digest: string });
    expect(chunks.length).toBeGreaterThan(5);
    let off = 0;
    for (const c of chunks) {
      expect(Object.keys(c)).toEqual(['offset', 'length', 'digest']);
      expect(c.offset).toBe(off);
      expect(c.length).toBeLessThanOrEqual(262144);
      expect(c.digest).toBe(sha(data.subarray(c.offset, c.offset + c.length)));
      off += c.length;
    }
    expect(off).toBe(data.byteLength);
  });

  test('--min/--avg/--max change the cuts; the fastcdc-rs vector holds through the CLI', async () => {
    // fastcdc-rs test_cut_sekien_16k_chunks (v2020): lengths 21325 17140 28084 18217 24700
    const img = resolve(import.meta.dirname, 'fixtures', 'fastcdc', 'SekienAkashita.jpg');
    const { stdout } = await run(process.execPath, [BIN, 'chunk', img, '--min', '4096', '--avg', '16384', '--max', '65535', '--json']);
    const lengths = stdout.trim().split('\n').map((l) => (JSON.parse(l) as { length: number }).length);
    expect(lengths).toEqual([21325, 17140, 28084, 18217, 24700]);
  });

  test('bad parameters and missing files exit non-zero with a clear message', async () => {
    await expect(run(process.execPath, [BIN, 'chunk', '/nonexistent/file'])).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('ENOENT') });
    await expect(run(process.execPath, [BIN, 'chunk', BIN, '--min', '10'])).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('INVALID_ARGUMENT') });
    await expect(run(process.execPath, [BIN, 'chunk', BIN, '--avg', 'abc'])).rejects.toMatchObject({ stderr: expect.stringContaining('whole number') });
  });
});

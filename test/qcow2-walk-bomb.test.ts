/**
 * Issue 8, defect 3: the qcow2 walk bomb. An 8 MiB image whose 16383 L1
 * entries all point at one L2 table of zero clusters blocked the event loop
 * for minutes through a plain OCI upload (and `snapyard push` / `inspect`
 * hung on it); the variant alternating zero and unallocated entries grew
 * RSS by more than a GB. The walk is now bounded by the file's size (shared
 * L2 tables are refused, the image is byte-chunked) and runs on a worker
 * thread on the server.
 *
 * The server is a real `snapyard serve` child process: a blocked event loop
 * there cannot also block this test, and its peak RSS (VmHWM) is its own.
 */
import { describe, expect, test, beforeAll, afterAll } from 'vitest';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { tempDirs } from './helpers/tmp.js';
import { sha } from './helpers/oci.js';
import { writeWalkBomb } from './helpers/qcow2-hostile.js';
import { indexFile } from '../client/file-index.js';
import { KIND_QCOW2 } from '../storage/blobs/qcow2-index.js';
import { planLayoutOf } from '../storage/qcow2/layout-plan.js';
import { isSnapyardError } from '../storage/errors.js';

const BIN = resolve(import.meta.dirname, '..', 'bin', 'snapyard.js');
const tmp = tempDirs('snapyard-bomb-');
const BOUND_MS = 20_000;

let child: ChildProcess;
let base: string;
let dir: string;

function vmHwmKiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

beforeAll(async () => {
  dir = tmp();
  child = spawn(process.execPath, [BIN, 'serve', '--data', join(dir, 'data'), '--host', '127.0.0.1', '--port', '0', '--workers', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr!.on('data', (b: Buffer) => { out += b.toString(); });
  const deadline = Date.now() + 30_000;
  const re = /serving on (?:http:\/\/)?([\d.]+:\d+)/;
  while (!re.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const m = re.exec(out);
  if (!m) throw new Error(`server did not start: ${out}`);
  base = `http://${m[1]}`;
});

afterAll(async () => {
  if (child && child.exitCode === null) {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
});

/** Uploads `bytes` monolithically while timing GET /v2/ every 100 ms; returns the upload's time and the slowest GET. */
async function uploadWhilePolling(repo: string, bytes: Buffer): Promise<{ status: number; uploadMs: number; slowestGetMs: number; gets: number }> {
  const t0 = Date.now();
  let done = false;
  const upload = fetch(`${base}/v2/${repo}/blobs/uploads/?digest=${sha(bytes)}`, { method: 'POST', body: bytes, signal: AbortSignal.timeout(BOUND_MS) })
    .then(async (r) => { await r.arrayBuffer(); return r.status; })
    .finally(() => { done = true; });
  upload.catch(() => {}); // awaited below; a failed GET must not leave it unhandled
  let slowest = 0;
  let gets = 0;
  do {
    const g0 = Date.now();
    const r = await fetch(`${base}/v2/`, { signal: AbortSignal.timeout(BOUND_MS) });
    expect(r.status).toBe(200);
    slowest = Math.max(slowest, Date.now() - g0);
    gets++;
    await new Promise((r) => setTimeout(r, 100));
  } while (!done);
  const status = await upload;
  return { status, uploadMs: Date.now() - t0, slowestGetMs: slowest, gets };
}

describe('qcow2 walk bomb (issue 8, defect 3)', () => {
  for (const alternate of [false, true]) {
    const name = alternate ? 'alternating zero/unallocated entries' : 'every entry a zero cluster';
    test(`through a plain OCI upload (${name}): bounded time and memory, the server stays responsive, the blob comes back byte-exact`, async () => {
      const file = join(dir, `bomb-${alternate ? 'alt' : 'zero'}.qcow2`);
      const bytes = writeWalkBomb(file, alternate);
      const hwm0 = vmHwmKiB(child.pid!);
      const repo = `bomb/${alternate ? 'alt' : 'zero'}`;
      const r = await uploadWhilePolling(repo, bytes);
      expect(r.status).toBe(201);
      expect(r.uploadMs).toBeLessThan(BOUND_MS);
      expect(r.gets).toBeGreaterThan(0);
      expect(r.slowestGetMs).toBeLessThan(2_000);
      // Peak RSS grew by less than 256 MiB (the unbounded walk took > 1 GB).
      expect(vmHwmKiB(child.pid!) - hwm0).toBeLessThan(256 * 1024);
      const back = await fetch(`${base}/v2/${repo}/blobs/${sha(bytes)}`);
      expect(back.status).toBe(200);
      const got = Buffer.from(await back.arrayBuffer());
      expect(got.byteLength).toBe(bytes.byteLength);
      expect(sha(got)).toBe(sha(bytes));
    });
  }

  test('the layout walk refuses the image (QCOW2_INVALID, shared L2 tables) in bounded time', () => {
    for (const alternate of [false, true]) {
      const file = join(dir, `plan-${alternate}.qcow2`);
      writeWalkBomb(file, alternate);
      const t0 = Date.now();
      let err: unknown;
      try {
        planLayoutOf(file);
      } catch (e) {
        err = e;
      }
      expect(Date.now() - t0).toBeLessThan(BOUND_MS);
      expect(isSnapyardError(err, 'QCOW2_INVALID')).toBe(true);
      expect((err as Error).message).toMatch(/share L2 tables/);
    }
  });

  test('the client-side index build (snapyard push) terminates and byte-chunks the image', async () => {
    const file = join(dir, 'client.qcow2');
    const bytes = writeWalkBomb(file, true);
    const t0 = Date.now();
    const r = await indexFile(file, null);
    expect(Date.now() - t0).toBeLessThan(BOUND_MS);
    expect(r.digest).toBe(sha(bytes));
    expect(r.index.kind).not.toBe(KIND_QCOW2);
    expect(r.index.size).toBe(bytes.byteLength);
  });

  test('snapyard push of the image terminates, and the pushed blob reads back byte-exact', async () => {
    const file = join(dir, 'push.qcow2');
    const bytes = writeWalkBomb(file, true);
    const t0 = Date.now();
    const res = await new Promise<{ code: number | null; stdout: string; stderr: string }>((done) => {
      execFile(process.execPath, [BIN, 'push', 'bomb/push:v1', file, '--registry', base, '--cache', join(dir, 'push-cache'), '--json'], { timeout: BOUND_MS }, (e, stdout, stderr) => {
        done({ code: e ? ((e as { code?: number }).code ?? null) : 0, stdout, stderr });
      });
    });
    expect(Date.now() - t0).toBeLessThan(BOUND_MS);
    expect(res.code, res.stderr).toBe(0);
    const back = await fetch(`${base}/v2/bomb/push/blobs/${sha(bytes)}`);
    expect(back.status).toBe(200);
    expect(sha(Buffer.from(await back.arrayBuffer()))).toBe(sha(bytes));
  });

  test('snapyard inspect FILE terminates with a clear qcow2 error', async () => {
    const file = join(dir, 'inspect.qcow2');
    writeWalkBomb(file);
    const t0 = Date.now();
    const res = await new Promise<{ code: number | null; stderr: string }>((done) => {
      execFile(process.execPath, [BIN, 'inspect', file, '--json'], { timeout: BOUND_MS }, (e, _out, stderr) => {
        done({ code: e ? ((e as { code?: number }).code ?? null) : 0, stderr });
      });
    });
    expect(Date.now() - t0).toBeLessThan(BOUND_MS);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^snapyard: QCOW2_INVALID: qcow2: .*share L2 tables/);
  });
});

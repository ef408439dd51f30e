/**
 * verify / verify --repair against a real server and the CLI, and crash
 * safety: kill -9 of a server child during a push and during a gc leaves a
 * store that verify passes and that serves every committed snapshot. On the
 * test backend (SNAPYARD_TEST_BACKEND): bits flip in a local pack file or an
 * S3 pack object, the child serves the local store or S3 + PostgreSQL.
 */
import { describe, expect, test } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { join, resolve } from 'node:path';
import { createServer } from 'node:net';
import { flipChunkBit, serveBackendArgs, startTestServer } from './helpers/server.js';
import { Oci, prng, sha } from './helpers/oci.js';
import { tempDirs } from './helpers/tmp.js';
import { mulberry32 } from './helpers/qcow2-fixtures.js';
import type { Digest } from '../storage/digest.js';
import type { VerifyReport } from '../storage/maintenance/verify.js';

const BIN = resolve(import.meta.dirname, '..', 'bin', 'snapyard.js');
const execFileP = promisify(execFile);
const tmp = tempDirs('snapyard-verify-');
const CLI_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SNAPYARD_REGISTRY' && k !== 'SNAPYARD_CACHE'));

/** Runs `snapyard verify --json`; returns the report and the exit code. */
async function verify(url: string, ...args: string[]): Promise<{ r: VerifyReport; code: number }> {
  try {
    const { stdout } = await execFileP(process.execPath, [BIN, 'verify', '--registry', url, '--json', ...args], { env: CLI_ENV, maxBuffer: 64 << 20 });
    return { r: JSON.parse(stdout) as VerifyReport, code: 0 };
  } catch (e) {
    const err = e as { stdout: string; code: number };
    return { r: JSON.parse(err.stdout) as VerifyReport, code: err.code };
  }
}

describe('snapyard verify', () => {
  test('finds a flipped byte anywhere in a pack record and names the snapshot; --repair + re-push heals it', async () => {
    const s = await startTestServer();
    try {
      const oci = new Oci(s.url);
      const a = prng(1_500_000, 41);
      const b = prng(1_500_000, 42);
      const ma = await oci.pushImage('v/r', 'a', a);
      await oci.pushImage('v/r', 'b', b);
      expect((await verify(s.url)).code).toBe(0);
      const r32 = mulberry32(7);
      const rnd = () => r32() / 2 ** 32;
      const index = await s.store.blobs.index((await s.store.meta.getBlob(ma.layerDigest as Digest))!);
      const list = index.lists()[0]!;
      for (let round = 0; round < 4; round++) {
        // A random chunk of a's layer (round 3: a's index chunk), a random byte of its record (header included).
        const digest = (round === 3 ? (await s.store.meta.getBlob(ma.layerDigest as Digest))!.indexDigest : `sha256:${list.rawDigestAt(Math.floor(rnd() * list.count)).toString('hex')}`) as Digest;
        await flipChunkBit(s, digest, (n) => Math.floor(rnd() * n));
        const bad = await verify(s.url);
        expect(bad.code, `round ${round}`).toBe(1);
        expect(bad.r.ok).toBe(false);
        expect(bad.r.problems.map((p) => p.digest)).toContain(digest);
        expect(bad.r.snapshots).toEqual(['v/r:a']);
        const fixed = await verify(s.url, '--repair');
        expect(fixed.r.repaired!.quarantined).toBe(1);
        // Still broken until a's layer is pushed again (its chunk was moved aside).
        expect((await verify(s.url)).code).toBe(1);
        await oci.pushImage('v/r', 'a', a);
        const ok = await verify(s.url);
        expect(ok.r.problems).toEqual([]);
        expect(ok.code).toBe(0);
        const got = Buffer.from(await (await fetch(`${s.url}/v2/v/r/blobs/${ma.layerDigest}`)).arrayBuffer());
        expect(got.equals(a)).toBe(true);
      }
    } finally {
      await s.stop();
    }
  });
});

async function freePort(): Promise<number> {
  return new Promise((res) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

/** `snapyard serve` on `data` (and `backend`: serveBackendArgs) as a child process. */
function serveChild(data: string, port: number, backend: string[]) {
  const child = spawn(process.execPath, [BIN, 'serve', '--data', data, '--host', '127.0.0.1', '--port', String(port), ...backend], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise<void>((res) => {
    let out = '';
    child.stdout.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('serving')) res();
    });
  });
  const exited = new Promise((r) => child.once('exit', r));
  return { child, ready, exited };
}

describe('crash safety (kill -9)', () => {
  test('during a push and during a gc: verify passes after restart and every committed snapshot is served', async () => {
    const data = join(tmp(), 'data');
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const oci = new Oci(base);
    const committed = new Map<string, Buffer>();
    const backend = await serveBackendArgs();
    let a = serveChild(data, port, backend);
    await a.ready;
    for (let i = 0; i < 6; i++) {
      const layer = Buffer.concat([prng(1_000_000, 60), prng(2_000_000, 61 + i)]);
      await oci.pushImage('crash/r', `t${i}`, layer);
      committed.set(`t${i}`, layer);
    }
    // kill -9 during a push (a large chunked upload being chunked).
    const big = prng(30_000_000, 70);
    const loc = (await oci.req('POST', '/v2/crash/r/blobs/uploads/')).headers.get('location')!;
    const patch = oci.req('PATCH', loc, { body: big }).catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 150));
    a.child.kill('SIGKILL');
    await a.exited;
    await patch;
    a = serveChild(data, port, backend);
    await a.ready;
    let v = await verify(base);
    expect(v.r.problems).toEqual([]);
    // Delete half the snapshots, then kill -9 during the gc (at several moments).
    for (const tag of ['t0', 't2', 't4']) {
      const d = (await oci.req('GET', `/v2/crash/r/manifests/${tag}`)).headers.get('docker-content-digest')!;
      expect((await oci.req('DELETE', `/v2/crash/r/manifests/${d}`)).status).toBe(202);
      committed.delete(tag);
    }
    for (const delay of [5, 40, 120]) {
      const gc = fetch(`${base}/snapyard/v1/_admin/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0, minLive: 0.99 }) }).catch((e: Error) => e);
      await new Promise((r) => setTimeout(r, delay));
      a.child.kill('SIGKILL');
      await a.exited;
      await gc;
      a = serveChild(data, port, backend);
      await a.ready;
      v = await verify(base);
      expect(v.r.problems, `gc killed after ${delay} ms`).toEqual([]);
      for (const [tag, layer] of committed) {
        const m = await oci.req('GET', `/v2/crash/r/manifests/${tag}`);
        expect(m.status).toBe(200);
        const got = Buffer.from(await (await fetch(`${base}/v2/crash/r/blobs/${sha(layer)}`)).arrayBuffer());
        expect(got.equals(layer), tag).toBe(true);
      }
    }
    // A gc that completes, then everything again.
    const done = await fetch(`${base}/snapyard/v1/_admin/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0 }) });
    expect(done.status).toBe(200);
    expect((await verify(base)).code).toBe(0);
    for (const [, layer] of committed) {
      const got = Buffer.from(await (await fetch(`${base}/v2/crash/r/blobs/${sha(layer)}`)).arrayBuffer());
      expect(got.equals(layer)).toBe(true);
    }
    a.child.kill('SIGTERM');
    await a.exited;
  }, 60_000);
});

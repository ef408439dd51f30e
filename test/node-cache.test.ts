/**
 * The node cache's size bound (`--cache-max`, client/cache-evict.ts), with
 * real pulls by the CLI against a real server: least recently used
 * snapshots go first, a pull running in another process keeps every chunk
 * it needs, and pulls after an eviction fetch again.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { LocalChunkStore } from '../storage/chunks/local-chunk-store.js';
import { BIN, cleanEnv, cliOk } from './helpers/cli.js';
import { prng } from './helpers/oci.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const MiB = 1024 * 1024;
const env = cleanEnv({ SNAPYARD_FROM_SOURCE: '1' });
let s: TestServer;
let dir: string;

beforeAll(async () => {
  s = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'snapyard-node-cache-'));
});

afterAll(async () => {
  await s?.stop();
});

interface PullJson {
  blobDigest: string;
  bytesDownloaded: number;
  chunks: { downloaded: number; fromCache: number };
}

async function pullJson(ref: string, out: string, cache: string, extra: string[] = [], registry = s.url): Promise<PullJson> {
  return JSON.parse(await cliOk(['pull', ref, '-o', out, '--registry', registry, '--cache', cache, '--json', ...extra], { env })) as PullJson;
}

function packBytes(cache: string): number {
  const d = join(cache, 'chunks', 'packs');
  return readdirSync(d).filter((f) => f.endsWith('.pack')).reduce((n, f) => n + statSync(join(d, f)).size, 0);
}

function storedBytes(cache: string): number {
  const st = new LocalChunkStore({ root: join(cache, 'chunks'), workers: 0 });
  try {
    return st.statsNow().stored;
  } finally {
    void st.close();
  }
}

function heldBlobs(cache: string): string[] {
  return (JSON.parse(readFileSync(join(cache, 'state.json'), 'utf8')) as { held: Array<{ blob: string }> }).held.map((h) => h.blob);
}

test('a cache bounded below three snapshots keeps the most recently used ones; an evicted one is fetched again, byte-exact', async () => {
  const files: Record<string, string> = {};
  for (const [i, tag] of ['a', 'b', 'c'].entries()) {
    files[tag] = join(dir, `${tag}.img`);
    writeFileSync(files[tag], prng(3 * MiB, 100 + i)); // incompressible: each stores ~3 MiB
    await cliOk(['push', `nc/lru:${tag}`, files[tag], '--registry', s.url, '--cache', join(dir, 'push-cache')], { env });
  }
  const cache = join(dir, 'bounded');
  const bound = ['--cache-max', '7M'];
  const blob: Record<string, string> = {};
  for (const tag of ['a', 'b', 'c']) {
    const r = await pullJson(`nc/lru:${tag}`, join(dir, `${tag}.out`), cache, bound);
    blob[tag] = r.blobDigest;
    expect(readFileSync(join(dir, `${tag}.out`)).equals(readFileSync(files[tag]!))).toBe(true);
  }
  // 9 MiB pulled into a 7 MiB cache: a (least recently used) went, b and c stayed, on disk too.
  expect(heldBlobs(cache)).toEqual([blob.c, blob.b]);
  expect(storedBytes(cache)).toBeLessThanOrEqual(7 * MiB);
  expect(storedBytes(cache)).toBeGreaterThan(6 * MiB);
  expect(packBytes(cache)).toBeLessThanOrEqual(7 * MiB);

  // c is still there: nothing downloaded.
  const c2 = await pullJson('nc/lru:c', join(dir, 'c2.out'), cache, bound);
  expect(c2.chunks.downloaded).toBe(0);
  // a was evicted: fetched again, byte-exact; now b is the least recently used and goes.
  const a2 = await pullJson('nc/lru:a', join(dir, 'a2.out'), cache, bound);
  expect(a2.chunks.downloaded).toBeGreaterThan(0);
  expect(a2.bytesDownloaded).toBeGreaterThan(2 * MiB);
  expect(readFileSync(join(dir, 'a2.out')).equals(readFileSync(files.a!))).toBe(true);
  expect(heldBlobs(cache)).toEqual([blob.a, blob.c]);
  expect(packBytes(cache)).toBeLessThanOrEqual(7 * MiB);
  const b2 = await pullJson('nc/lru:b', join(dir, 'b2.out'), cache);
  expect(b2.chunks.downloaded).toBeGreaterThan(0);
  expect(readFileSync(join(dir, 'b2.out')).equals(readFileSync(files.b!))).toBe(true);
}, 180_000);

/** A proxy to the server that holds chunk requests until `open()`: a pull stopped between planning and fetching. */
async function gatedProxy(target: string): Promise<{ url: string; held: Promise<void>; open: () => void; close: () => Promise<void> }> {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let sawChunks!: () => void;
  const held = new Promise<void>((r) => (sawChunks = r));
  const t = new URL(target);
  const server: Server = createServer((req, res) => {
    const forward = () => {
      const up = request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    };
    if (req.url?.includes('/_chunks')) {
      sawChunks();
      void gate.then(forward);
    } else forward();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    held,
    open,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

test('an eviction in another process keeps every chunk a pull in progress needs: its output is byte-exact', async () => {
  // y is in the node cache; x is y with 512 KiB changed: a pull of x takes most of it from the cache.
  const y = prng(4 * MiB, 7);
  const x = Buffer.from(y);
  prng(512 * 1024, 8).copy(x, 2 * MiB);
  const other = prng(2 * MiB, 9);
  for (const [tag, data] of [['y', y], ['x', x], ['other', other]] as const) {
    writeFileSync(join(dir, `cc-${tag}.img`), data);
    await cliOk(['push', `nc/cc:${tag}`, join(dir, `cc-${tag}.img`), '--registry', s.url, '--cache', join(dir, 'push-cache')], { env });
  }
  const cache = join(dir, 'shared');
  await cliOk(['prefetch', 'nc/cc:y', '--registry', s.url, '--cache', cache], { env });

  const proxy = await gatedProxy(s.url);
  try {
    const child = spawn(process.execPath, [BIN, 'pull', 'nc/cc:x', '-o', join(dir, 'cc-x.out'), '--registry', proxy.url, '--cache', cache, '--json'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', r));
    await proxy.held; // the pull has planned: it counts on y's chunks in the cache, and waits for the rest

    // Meanwhile another process pulls something else into the same cache, bounded far below what it holds.
    await pullJson('nc/cc:other', join(dir, 'cc-other.out'), cache, ['--cache-max', '1M']);
    expect(heldBlobs(cache)).toEqual([]); // nothing fits: every snapshot was dropped...
    expect(storedBytes(cache)).toBeGreaterThan(3 * MiB); // ...but the chunks the pull in progress needs stayed

    proxy.open();
    expect(await exited, stderr).toBe(0);
    const r = JSON.parse(stdout) as PullJson;
    expect(r.chunks.fromCache).toBeGreaterThan(0);
    expect(readFileSync(join(dir, 'cc-x.out')).equals(x)).toBe(true);
  } finally {
    proxy.open();
    await proxy.close();
  }
  // Once no pull needs them, the next bounded command evicts them; a pull after that fetches again.
  await pullJson('nc/cc:other', join(dir, 'cc-other2.out'), cache, ['--cache-max', '3M']);
  expect(storedBytes(cache)).toBeLessThanOrEqual(3 * MiB);
  const again = await pullJson('nc/cc:y', join(dir, 'cc-y.out'), cache, ['--cache-max', '3M']);
  expect(again.chunks.downloaded).toBeGreaterThan(0);
  expect(readFileSync(join(dir, 'cc-y.out')).equals(y)).toBe(true);
}, 180_000);

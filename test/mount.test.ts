/**
 * `snapyard mount` (client/lazy/, issue 13): a snapshot pushed to a real
 * registry served as an NBD export that fetches chunks as qemu reads them,
 * checked with qemu-img / qemu-io against the pushed images. The registry is
 * reached through a proxy (test/helpers/chunk-proxy.ts) that counts what is
 * fetched, corrupts a response on demand, and can go away.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { cliOk } from './helpers/cli.js';
import { makeBaseImage, makeVariant, qemuInfo, runTool } from './helpers/qcow2-fixtures.js';
import { startChunkProxy, type ChunkProxy } from './helpers/chunk-proxy.js';
import { startMount } from './helpers/mount-process.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-mount-');
let s: TestServer;
let proxy: ChunkProxy;
let work: string;
const img = { base: '', games: '' };

beforeAll(async () => {
  s = await startTestServer();
  proxy = await startChunkProxy(s.url);
  work = tmp();
  img.base = await makeBaseImage(work);
  img.games = await makeVariant(work, img.base, 'games');
  for (const [tag, f] of [['base', img.base], ['games', img.games]] as const) {
    await cliOk(['push', `loco/win98:${tag}`, f, '--registry', s.url, '--cache', join(work, 'push-cache')]);
  }
}, 180_000);

afterAll(async () => {
  await proxy?.close();
  await s?.stop();
});

/** `qemu-img compare` of an export (raw) with an image (qcow2): exit 0 when the guest views are identical. */
async function compare(url: string, image: string): Promise<void> {
  await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', url, image]);
}

function mountArgs(dir: string, extra: string[] = []): string[] {
  return ['--registry', proxy.url, '--cache', join(dir, 'cache'), '--prefetch-rate', '0', ...extra];
}

describe('snapyard mount', () => {
  test('no base, empty cache: the export (default and repo:tag) is the image, and a second mount on the same cache fetches nothing', async () => {
    const dir = tmp();
    const sock = join(dir, 'nbd.sock');
    const before = proxy.counts();
    const m = await startMount('loco/win98:games', sock, mountArgs(dir));
    try {
      expect(m.listening).toMatchObject({ ref: 'loco/win98:games', chunksLocal: 0, size: (await qemuInfo(img.games)).virtualSize });
      await compare(m.url(), img.games);
      await compare(m.url('loco/win98:games'), img.games);
    } finally {
      const stats = await m.stop();
      expect(stats.chunks).toBeGreaterThan(0);
      expect(proxy.counts().chunkRequests).toBeGreaterThan(before.chunkRequests);
    }
    const again = proxy.counts();
    const m2 = await startMount('loco/win98:games', sock, mountArgs(dir));
    try {
      await compare(m2.url(), img.games);
    } finally {
      const stats = await m2.stop();
      expect(stats.chunks).toBe(0);
      expect(proxy.counts().chunkRequests).toBe(again.chunkRequests);
    }
  }, 120_000);

  test('--base: a variant over its base reads the shared chunks from the base file, far fewer bytes fetched', async () => {
    const full = tmp();
    const m1 = await startMount('loco/win98:games', join(full, 'nbd.sock'), mountArgs(full));
    let fullBytes: number;
    try {
      await compare(m1.url(), img.games);
    } finally {
      fullBytes = (await m1.stop()).wireBytes;
    }
    const dir = tmp();
    const m = await startMount('loco/win98:games', join(dir, 'nbd.sock'), mountArgs(dir, ['--base', img.base]));
    try {
      await compare(m.url(), img.games);
    } finally {
      const withBase = (await m.stop()).wireBytes;
      expect(withBase).toBeGreaterThan(0);
      expect(withBase).toBeLessThan(fullBytes / 4);
    }
  }, 120_000);
});

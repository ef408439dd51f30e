/**
 * `snapyard mount` (client/lazy/, issue 13): a snapshot pushed to a real
 * registry served as an NBD export that fetches chunks as qemu reads them,
 * checked with qemu-img / qemu-io against the pushed images. The registry is
 * reached through a proxy (test/helpers/chunk-proxy.ts) that counts what is
 * fetched, corrupts a response on demand, and can go away.
 */
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { qemuInfo } from './helpers/qcow2-fixtures.js';
import { compareExport as compare, useMountFixture } from './helpers/mount-fixture.js';
import { startMount } from './helpers/mount-process.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-mount-');
const f = useMountFixture(tmp);
const img = f.img;
const mountArgs = (dir: string, extra: string[] = []) => f.args(dir, extra);

describe('snapyard mount', () => {
  test('no base, empty cache: the export (default and repo:tag) is the image, and a second mount on the same cache fetches nothing', async () => {
    const dir = tmp();
    const sock = join(dir, 'nbd.sock');
    const before = f.proxy.counts();
    const m = await startMount('loco/win98:games', sock, mountArgs(dir));
    try {
      expect(m.listening).toMatchObject({ ref: 'loco/win98:games', chunksLocal: 0, size: (await qemuInfo(img.games)).virtualSize });
      await compare(m.url(), img.games);
      await compare(m.url('loco/win98:games'), img.games);
    } finally {
      const stats = await m.stop();
      expect(stats.chunks).toBeGreaterThan(0);
      expect(f.proxy.counts().chunkRequests).toBeGreaterThan(before.chunkRequests);
    }
    const again = f.proxy.counts();
    const m2 = await startMount('loco/win98:games', sock, mountArgs(dir));
    try {
      await compare(m2.url(), img.games);
    } finally {
      const stats = await m2.stop();
      expect(stats.chunks).toBe(0);
      expect(f.proxy.counts().chunkRequests).toBe(again.chunkRequests);
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

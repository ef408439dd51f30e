/**
 * `snapyard mount` (client/lazy/, issue 13): a snapshot pushed to a real
 * registry served as an NBD export that fetches chunks as qemu reads them,
 * checked with qemu-img / qemu-io against the pushed images. The registry is
 * reached through a proxy (test/helpers/chunk-proxy.ts) that counts what is
 * fetched, corrupts a response on demand, and can go away.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { qemuInfo, runTool } from './helpers/qcow2-fixtures.js';
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
      expect(m.listening).toMatchObject({ ref: 'loco/win98:games', size: (await qemuInfo(img.games)).virtualSize });
      expect(await m.waitFor('ready')).toMatchObject({ chunksLocal: 0 });
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

  test('block status from the index: qemu-img map through the export finds as many data bytes as in the image and fetches no chunk', async () => {
    const dir = tmp();
    const m = await startMount('loco/win98:games', join(dir, 'nbd.sock'), mountArgs(dir));
    const dataBytes = async (args: string[]) => (JSON.parse((await runTool('qemu-img', ['map', '--output=json', ...args])).stdout) as Array<{ length: number; data: boolean }>)
      .reduce((n, e) => n + (e.data ? e.length : 0), 0);
    try {
      const own = await dataBytes(['-f', 'qcow2', img.games]);
      expect(own).toBeGreaterThan(0);
      expect(await dataBytes(['-f', 'raw', m.url()])).toBe(own);
    } finally {
      expect((await m.stop()).chunks).toBe(0);
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

  test('--record-trace: the ranges read are pushed as an artifact whose subject is the snapshot (referrers API); the next mount fetches them first', async () => {
    const reads = ['-c', 'read 0 1M', '-c', 'read 8M 2M', '-c', 'read 3M 512k'];
    const a = tmp();
    const m = await startMount('loco/win98:games', join(a, 'nbd.sock'), mountArgs(a, ['--record-trace', '600']));
    try {
      await runTool('qemu-io', ['-r', '-f', 'raw', ...reads, m.url()]);
    } finally {
      await m.stop(); // before the 600 s: the trace so far is pushed as it stops
    }
    const pushed = m.events().find((e) => e.event === 'trace-pushed')!;
    expect(pushed.ranges).toBeGreaterThanOrEqual(3);
    const referrers = (await (await fetch(`${f.s.url}/v2/loco/win98/referrers/${String(m.listening.manifest)}`)).json()) as { manifests: Array<{ digest: string; artifactType: string }> };
    expect(referrers.manifests).toContainEqual(expect.objectContaining({ digest: pushed.manifest, artifactType: 'application/vnd.snapyard.boot-trace' }));
    // A fresh node, prefetch off: only the traced chunks are fetched, then reads of them need no registry.
    const b = tmp();
    const m2 = await startMount('loco/win98:games', join(b, 'nbd.sock'), mountArgs(b, ['--read-timeout', '2']));
    try {
      expect((await m2.waitFor('ready')).trace).toMatchObject({ manifest: pushed.manifest, ranges: pushed.ranges });
      await m2.waitFor('trace-fetched');
      await f.offline(() => runTool('qemu-io', ['-r', '-f', 'raw', ...reads, m2.url()]));
    } finally {
      const s = await m2.stop();
      expect(s.chunks).toBeGreaterThan(0);
      expect(s.chunks).toBeLessThan(m2.listening.chunks as number);
    }
  }, 120_000);

  test('--materialize: once the prefetch has every chunk the snapshot is written byte-exact, and the overlay rebased onto it runs without the mount', async () => {
    const dir = tmp();
    const out = join(dir, 'games.qcow2');
    const overlay = join(dir, 'instance.qcow2');
    const m = await startMount('loco/win98:games', join(dir, 'nbd.sock'), mountArgs(dir, ['--prefetch-rate', '64M', '--materialize', out, '--overlay', overlay]));
    try {
      await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x3c 2M 64k', overlay]);
      expect(await m.waitFor('materialized')).toMatchObject({ file: out, form: 'full' });
      expect(await sha256File(out)).toBe(await sha256File(img.games));
    } finally {
      await m.stop();
    }
    await runTool('qemu-img', ['rebase', '-u', '-b', out, '-F', 'qcow2', overlay]);
    await runTool('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x3c 2M 64k', overlay]);
    await expect(runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', overlay, img.games])).rejects.toThrow(/Content mismatch at offset 2097152!/);
  }, 120_000);
});

async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

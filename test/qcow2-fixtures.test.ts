/**
 * The qcow2 fixture builders (test/helpers/qcow2-fixtures.ts) themselves:
 * every image is a clean qcow2, and each one has the property it is named for.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  baseFiles,
  guestContentEqual,
  makeAllFixtures,
  makeBaseImage,
  qemuInfo,
  runTool,
  standardVariantEdits,
  type FixtureSet,
} from './helpers/qcow2-fixtures.js';

const MiB = 1024 * 1024;
let work: string;
let fx: FixtureSet;
let buildMs: number;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Guest bytes of an image (or of one of its internal snapshots) as a raw file. */
async function raw(src: string, out: string, snapshot?: string): Promise<string> {
  await runTool('qemu-img', ['convert', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), '-O', 'raw', src, out]);
  return out;
}

/** Copies the whole FAT tree of a raw image out to a host directory; returns a reader. */
async function fatExtract(rawPath: string): Promise<(path: string) => Promise<Buffer>> {
  const out = await mkdtemp(join(work, 'fat-'));
  await runTool('mcopy', ['-s', '-n', '-i', rawPath, '::/*', `${out}/`]);
  return (path) => readFile(join(out, ...path.split('/')));
}

const isZero = (b: Buffer) => b.equals(Buffer.alloc(b.length));

async function fatList(rawPath: string): Promise<string[]> {
  const { stdout } = await runTool('mdir', ['-i', rawPath, '-/', '-b', '::/']);
  return stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.endsWith('/'))
    .map((l) => l.replace(/^::\//, ''))
    .sort();
}

/** Host offsets of the image's data clusters, in guest order. */
async function hostOffsets(path: string): Promise<number[]> {
  const { stdout } = await runTool('qemu-img', ['map', '--output=json', path]);
  return (JSON.parse(stdout) as Array<{ data: boolean; offset?: number }>).filter((e) => e.data && e.offset !== undefined).map((e) => e.offset!);
}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'snapyard-qcow2fx-'));
  const t0 = performance.now();
  fx = await makeAllFixtures(join(work, 'set'));
  buildMs = performance.now() - t0;
  console.log(`fixture set built in ${Math.round(buildMs)} ms`);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('qcow2 fixtures', () => {
  test('the whole set builds quickly', () => {
    expect(buildMs).toBeLessThan(15_000);
  });

  test('qemu-img check is clean for every image, all are 64 MiB qcow2 with 64 KiB clusters', async () => {
    for (const [name, path] of Object.entries(fx)) {
      if (name === 'dir') continue;
      const { stdout } = await runTool('qemu-img', ['check', '--output=json', path]);
      const r = JSON.parse(stdout) as Record<string, unknown>;
      expect(r['check-errors'] ?? 0, `${name}: check errors`).toBe(0);
      expect(r['corruptions'] ?? 0, `${name}: corruptions`).toBe(0);
      expect(r['leaks'] ?? 0, `${name}: leaks`).toBe(0);
      const info = await qemuInfo(path);
      expect(info.format).toBe('qcow2');
      expect(info.virtualSize).toBe(64 * MiB);
      expect(info.clusterSize).toBe(64 * 1024);
    }
  });

  test('base: a FAT filesystem holding exactly baseFiles(), with compressible and zero areas', async () => {
    const r = await raw(fx.base, join(work, 'base.raw'));
    const files = baseFiles();
    expect(await fatList(r)).toEqual(files.map((f) => f.path).sort());
    const fatRead = await fatExtract(r);
    for (const f of files) expect(sha(await fatRead(f.path)), f.path).toBe(sha(f.content));
    expect(files.filter((f) => isZero(f.content)).length).toBeGreaterThanOrEqual(2);
    // Guest zeros (the swap file, free space) are not allocated; text compresses.
    const size = (await readFile(fx.base)).length;
    const data = files.reduce((n, f) => n + (isZero(f.content) ? 0 : f.content.length), 0);
    expect(size).toBeLessThan(data * 1.1 + 2 * MiB);
    expect(size).toBeLessThan(32 * MiB);
  });

  test('variant: a full image (no backing file) that differs from the base by the edits', async () => {
    expect((await qemuInfo(fx.variant)).backingFilename).toBeUndefined();
    expect(await guestContentEqual(fx.base, fx.variant)).toBe(false);
    const r = await raw(fx.variant, join(work, 'variant.raw'));
    const fatRead = await fatExtract(r);
    const edits = standardVariantEdits();
    for (const f of edits.write ?? []) expect(sha(await fatRead(f.path)), f.path).toBe(sha(f.content));
    for (const p of edits.patch ?? []) {
      const b = await fatRead(p.path);
      expect(b.subarray(p.offset, p.offset + p.bytes.length).equals(p.bytes), p.path).toBe(true);
    }
    const list = await fatList(r);
    for (const p of edits.remove ?? []) expect(list).not.toContain(p);
    // Untouched files are unchanged.
    const kernel = baseFiles().find((f) => f.path === 'WINDOWS/SYSTEM/KERNEL32.DLL')!;
    expect(sha(await fatRead(kernel.path))).toBe(sha(kernel.content));
  });

  test("overlay: backed by the base, with the writes on top", async () => {
    const info = await qemuInfo(fx.overlay);
    expect(info.backingFilename).toBe('base.qcow2');
    expect(info.backingFormat).toBe('qcow2');
    expect(resolve(info.fullBackingFilename!)).toBe(resolve(fx.base));
    expect(await guestContentEqual(fx.base, fx.overlay)).toBe(false);
    const { stdout } = await runTool('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0xab 1M 256k', '-c', 'read -P 0xcd 20M 64k', '-c', 'read -P 0 8M 128k', fx.overlay]);
    expect(stdout).not.toMatch(/Pattern verification failed/);
    // Small: only the written clusters are in the overlay itself.
    expect((await readFile(fx.overlay)).length).toBeLessThan(2 * MiB);
  });

  test('shuffled: same guest content as the base, different bytes and host layout', async () => {
    expect(await guestContentEqual(fx.base, fx.shuffled)).toBe(true);
    const [a, b] = [await readFile(fx.base), await readFile(fx.shuffled)];
    expect(a.equals(b)).toBe(false);
    await expect(runTool('cmp', ['-s', fx.base, fx.shuffled])).rejects.toThrow(/exit 1/);
    const [oa, ob] = [await hostOffsets(fx.base), await hostOffsets(fx.shuffled)];
    expect(ob).not.toEqual(oa);
    // The host order is not monotonic in guest order.
    expect(ob.some((o, i) => i > 0 && o < ob[i - 1]!)).toBe(true);
  });

  test('compressed: same guest content, smaller file', async () => {
    expect(await guestContentEqual(fx.base, fx.compressed)).toBe(true);
    expect((await readFile(fx.compressed)).length).toBeLessThan((await readFile(fx.base)).length);
  });

  test('internal snapshot: snap1 listed, holds the base content, the active layer moved on', async () => {
    const { stdout } = await runTool('qemu-img', ['snapshot', '-l', fx.snapshot]);
    expect(stdout).toMatch(/\bsnap1\b/);
    expect((await qemuInfo(fx.snapshot)).snapshots.map((s) => s.name)).toEqual(['snap1']);
    expect(await guestContentEqual(fx.base, fx.snapshot)).toBe(false);
    const snapRaw = await raw(fx.snapshot, join(work, 'snap1.raw'), 'snap1');
    expect(await guestContentEqual(fx.base, snapRaw)).toBe(true);
  });

  test('deterministic: same seed gives the same bytes, another seed does not', async () => {
    const again = await makeBaseImage(join(work, 'again'));
    expect(sha(await readFile(again))).toBe(sha(await readFile(fx.base)));
    const other = await makeBaseImage(join(work, 'other'), { seed: 1, scale: 0.25 });
    expect(sha(await readFile(other))).not.toBe(sha(await readFile(fx.base)));
  });

  test('a missing tool is reported with its Debian package', async () => {
    await expect(runTool('mformat', ['--version'], { env: { PATH: join(work, 'nowhere') } })).rejects.toThrow(/mformat is not installed.*"mtools"/);
    await expect(runTool('qemu-img', ['--version'], { env: { PATH: join(work, 'nowhere') } })).rejects.toThrow(/"qemu-utils"/);
  });
});

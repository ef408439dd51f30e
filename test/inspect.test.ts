/**
 * `snapyard inspect FILE [--json]` on local files: qcow2 facts against
 * `qemu-img info`/`qemu-img map`, chunk statistics over the guest view of the
 * allocated data (same for an image and its compressed copy), raw files,
 * and the error cases (truncated qcow2, missing file).
 */
import { execFile } from 'node:child_process';
import { copyFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, test } from 'vitest';
import { makeBaseImage, makeCompressed, makeOverlay, makeWithInternalSnapshot, qemuInfo, randomBytes, runTool } from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const BIN = resolve(import.meta.dirname, '..', 'bin', 'snapyard.js');
const run = promisify(execFile);
const newDir = tempDirs('snapyard-inspect-');
const MiB = 1024 * 1024;

interface Report {
  file: string;
  format: 'qcow2' | 'raw';
  version?: number;
  virtualSize?: number;
  clusterSize?: number;
  fileSize?: number;
  size?: number;
  backingFile?: string | null;
  backingFormat?: string | null;
  compressionType?: string;
  extendedL2?: boolean;
  dirty?: boolean;
  allocatedBytes?: number;
  zeroBytes?: number;
  unallocatedBytes?: number;
  compressedClusters?: number;
  snapshots?: { count: number; names: string[] };
  chunks: { count: number; bytes: number; unique: number; uniqueBytes: number; avgSize: number };
}

async function inspectJson(file: string): Promise<Report> {
  const { stdout } = await run(process.execPath, [BIN, 'inspect', file, '--json']);
  const lines = stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Report;
}

async function inspectHuman(file: string): Promise<string> {
  return (await run(process.execPath, [BIN, 'inspect', file])).stdout;
}

/** Sum of the lengths of `qemu-img map` ranges with data in this layer (depth 0, host offset given). */
async function qemuDataBytes(file: string): Promise<number> {
  const { stdout } = await runTool('qemu-img', ['map', '--output=json', file]);
  const m = JSON.parse(stdout) as Array<{ length: number; depth: number; data: boolean; offset?: number }>;
  return m.filter((e) => e.data && e.depth === 0 && e.offset !== undefined).reduce((a, e) => a + e.length, 0);
}

let dir: string;
let base: string;
let overlay: string;
let compressed: string;
let snapshot: string;

beforeAll(async () => {
  dir = newDir();
  base = await makeBaseImage(dir);
  [overlay, compressed, snapshot] = await Promise.all([makeOverlay(dir, base, 'overlay'), makeCompressed(dir, base), makeWithInternalSnapshot(dir, base)]);
});

describe('snapyard inspect FILE (qcow2)', () => {
  test('base image: facts match qemu-img info and map; human output has the key lines', async () => {
    const r = await inspectJson(base);
    const info = await qemuInfo(base);
    expect(r.format).toBe('qcow2');
    expect(r.file).toBe(base);
    expect(r.version).toBe(3);
    expect(r.virtualSize).toBe(info.virtualSize);
    expect(r.clusterSize).toBe(info.clusterSize);
    expect(r.fileSize).toBe(statSync(base).size);
    expect(r.backingFile).toBeNull();
    expect(r.backingFormat).toBeNull();
    expect(r.compressionType).toBe('zlib');
    expect(r.extendedL2).toBe(false);
    expect(r.dirty).toBe(false);
    expect(r.compressedClusters).toBe(0);
    expect(r.snapshots).toEqual({ count: 0, names: [] });
    expect(r.allocatedBytes).toBe(await qemuDataBytes(base));
    expect(r.allocatedBytes! + r.zeroBytes! + r.unallocatedBytes!).toBe(r.virtualSize);
    const c = r.chunks;
    expect(c.bytes).toBe(r.allocatedBytes);
    expect(c.count).toBeGreaterThan(10);
    expect(c.unique).toBeGreaterThan(0);
    expect(c.unique).toBeLessThanOrEqual(c.count);
    expect(c.uniqueBytes).toBeLessThanOrEqual(c.bytes);
    expect(c.avgSize).toBe(Math.round(c.bytes / c.count));

    const h = await inspectHuman(base);
    const mib = (n: number) => `${n} (${(n / MiB).toFixed(2)} MiB)`;
    expect(h).toMatch(/^format: +qcow2$/m);
    expect(h).toMatch(/^version: +3$/m);
    expect(h).toMatch(new RegExp(`^virtual size: +${mib(info.virtualSize).replace(/[()]/g, '\\$&')}$`, 'm'));
    expect(h).toMatch(new RegExp(`^cluster size: +${info.clusterSize}$`, 'm'));
    expect(h).toMatch(/^backing file: +-$/m);
    expect(h).toMatch(new RegExp(`^allocated: +${r.allocatedBytes} \\(`, 'm'));
    expect(h).toMatch(new RegExp(`^chunks: +${c.count}$`, 'm'));
    expect(h).toMatch(new RegExp(`^unique chunks: +${c.unique}$`, 'm'));
    expect(h).toMatch(/^unique bytes: +\d+ \(\d+\.\d\d MiB\)$/m);
    expect(h).toMatch(/^avg chunk size: +\d+$/m);
    // Aligned: every value starts in the same column.
    const cols = new Set(h.trim().split('\n').map((l) => /^[^:]+: +/.exec(l)![0].length));
    expect(cols.size).toBe(1);
  });

  test('overlay: backing file reported, only its own writes allocated', async () => {
    const r = await inspectJson(overlay);
    const info = await qemuInfo(overlay);
    expect(r.backingFile).toBe('base.qcow2');
    expect(r.backingFile).toBe(info.backingFilename);
    expect(r.backingFormat).toBe('qcow2');
    expect(r.allocatedBytes).toBe(await qemuDataBytes(overlay));
    expect(r.allocatedBytes).toBeLessThan(1 * MiB);
    expect(r.zeroBytes).toBeGreaterThan(0); // `write -z 8M 128k`
    expect(r.chunks.bytes).toBe(r.allocatedBytes);
    expect(await inspectHuman(overlay)).toMatch(/^backing file: +base\.qcow2$/m);
  });

  test('compressed copy: compressed clusters counted, same chunk statistics as the base (same guest data)', async () => {
    const [b, c] = await Promise.all([inspectJson(base), inspectJson(compressed)]);
    expect(c.compressedClusters).toBeGreaterThan(0);
    expect(c.fileSize).toBeLessThan(b.fileSize!);
    expect(c.allocatedBytes).toBe(b.allocatedBytes);
    expect(c.chunks).toEqual(b.chunks);
    expect(await inspectHuman(compressed)).toMatch(new RegExp(`^compressed clusters: +${c.compressedClusters}$`, 'm'));
  });

  test('internal snapshot: listed by name', async () => {
    const r = await inspectJson(snapshot);
    const info = await qemuInfo(snapshot);
    expect(r.snapshots).toEqual({ count: 1, names: info.snapshots.map((s) => s.name) });
    expect(r.snapshots!.names).toEqual(['snap1']);
    expect(await inspectHuman(snapshot)).toMatch(/^snapshots: +1 \(snap1\)$/m);
  });
});

describe('snapyard inspect FILE (raw and errors)', () => {
  test('raw file: size and chunk statistics over the file bytes (dedup inside the file)', async () => {
    const file = join(dir, 'disk.raw');
    const part = randomBytes(5, 2 * MiB);
    writeFileSync(file, Buffer.concat([part, part, part]));
    const r = await inspectJson(file);
    expect(r).toMatchObject({ format: 'raw', size: 6 * MiB });
    expect(r.chunks.bytes).toBe(6 * MiB);
    // Same chunks as `snapyard chunk`.
    const { stdout } = await run(process.execPath, [BIN, 'chunk', file, '--json']);
    const chunks = stdout.trim().split('\n').map((l) => JSON.parse(l) as { length: number; digest: string });
    const unique = new Map(chunks.map((c) => [c.digest, c.length]));
    expect(r.chunks.count).toBe(chunks.length);
    expect(r.chunks.unique).toBe(unique.size);
    expect(r.chunks.uniqueBytes).toBe([...unique.values()].reduce((a, b) => a + b, 0));
    expect(r.chunks.unique).toBeLessThan(r.chunks.count);
    expect(r.chunks.uniqueBytes).toBeLessThan(4 * MiB);
    const h = await inspectHuman(file);
    expect(h).toMatch(/^format: +raw$/m);
    expect(h).toMatch(/^size: +6291456 \(6\.00 MiB\)$/m);
  });

  test('truncated qcow2: exit 2 with QCOW2_INVALID', async () => {
    const file = join(dir, 'truncated.qcow2');
    copyFileSync(base, file);
    truncateSync(file, 3_000_000);
    await expect(run(process.execPath, [BIN, 'inspect', file, '--json'])).rejects.toMatchObject({
      code: 2,
      stdout: '',
      stderr: expect.stringMatching(/^snapyard: QCOW2_INVALID: /),
    });
  });

  test('missing file: exit 2 naming the file', async () => {
    const file = join(dir, 'no-such-image.qcow2');
    await expect(run(process.execPath, [BIN, 'inspect', file])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining(file),
    });
  });
});

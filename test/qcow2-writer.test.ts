/**
 * The streaming qcow2 writer (storage/qcow2/writer.ts), checked with the real
 * qemu tools: every image it writes must pass `qemu-img check` with no errors
 * and no leaks, and read back (qemu-img compare) as the content written.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readdir, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, test } from 'vitest';
import { isSnapyardError } from '../storage/errors.js';
import { Qcow2Writer, type Qcow2WriteResult, type Qcow2WriterOptions } from '../storage/qcow2/writer.js';
import { guestContentEqual, makeBaseImage, makeVariant, mulberry32, qemuInfo, randomBytes, runTool } from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const execFileP = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const newDir = tempDirs('snapyard-qcow2-writer-');

interface CheckResult {
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'image-end-offset'?: number;
}

/** `qemu-img check --output=json` (its exit status is non-zero when it finds problems; the JSON says which). */
async function qemuCheck(path: string): Promise<CheckResult> {
  let stdout: string;
  try {
    stdout = (await execFileP('qemu-img', ['check', '--output=json', path], { encoding: 'utf8' })).stdout;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    if (!err.stdout) throw new Error(`qemu-img check ${path}: ${err.stderr ?? err.message}`);
    stdout = err.stdout;
  }
  return JSON.parse(stdout) as CheckResult;
}

async function expectClean(path: string): Promise<CheckResult> {
  const r = await qemuCheck(path);
  expect({ errors: r['check-errors'], corruptions: r.corruptions ?? 0, leaks: r.leaks ?? 0 }).toEqual({ errors: 0, corruptions: 0, leaks: 0 });
  return r;
}

async function toRaw(src: string, out: string): Promise<string> {
  await runTool('qemu-img', ['convert', '-O', 'raw', src, out]);
  return out;
}

const ZEROS = Buffer.alloc(2 * MiB);
const isZero = (b: Buffer) => b.equals(ZEROS.subarray(0, b.length));

/** Reads a raw file cluster by cluster (the last one may be short). */
async function* clustersOf(rawPath: string, clusterSize: number): AsyncGenerator<{ offset: number; data: Buffer }> {
  const fh = await open(rawPath, 'r');
  try {
    const size = (await fh.stat()).size;
    for (let offset = 0; offset < size; offset += clusterSize) {
      const data = Buffer.alloc(Math.min(clusterSize, size - offset));
      await fh.read(data, 0, data.length, offset);
      yield { offset, data };
    }
  } finally {
    await fh.close();
  }
}

/**
 * Writes a raw disk's content as a standalone qcow2: non-zero clusters with
 * writeData (consecutive ones coalesced into writes of up to `maxRun` bytes),
 * zero runs with writeZeros or left unallocated.
 */
async function qcow2FromRaw(rawPath: string, out: string, opts: { clusterBits: number; zeros: 'write' | 'skip'; maxRun?: number }): Promise<Qcow2WriteResult> {
  const cs = 2 ** opts.clusterBits;
  const maxRun = opts.maxRun ?? Math.max(MiB, cs);
  const virtualSize = (await stat(rawPath)).size;
  const w = await Qcow2Writer.create(out, { virtualSize, clusterBits: opts.clusterBits });
  let run: Buffer[] = [];
  let runStart = 0;
  let runLen = 0;
  let zeroStart = -1;
  const flushRun = async () => {
    if (runLen > 0) await w.writeData(runStart, run.length === 1 ? run[0]! : Buffer.concat(run));
    run = [];
    runLen = 0;
  };
  const flushZeros = async (end: number) => {
    if (zeroStart >= 0 && opts.zeros === 'write') await w.writeZeros(zeroStart, end - zeroStart);
    zeroStart = -1;
  };
  for await (const { offset, data } of clustersOf(rawPath, cs)) {
    if (isZero(data)) {
      await flushRun();
      if (zeroStart < 0) zeroStart = offset;
      continue;
    }
    await flushZeros(offset);
    if (runLen > 0 && runLen + data.length > maxRun) await flushRun();
    if (runLen === 0) runStart = offset;
    run.push(data);
    runLen += data.length;
  }
  await flushRun();
  await flushZeros(virtualSize);
  return w.finish();
}

/** Header fields and table entries, read straight from the file (independent of the writer's code). */
async function inspect(path: string): Promise<{ version: number; headerLength: number; refcountOrder: number; l1: bigint[]; refcountTable: bigint[] }> {
  const fh = await open(path, 'r');
  try {
    const h = Buffer.alloc(112);
    await fh.read(h, 0, 112, 0);
    const cs = 2 ** h.readUInt32BE(20);
    const l1Size = h.readUInt32BE(36);
    const l1Buf = Buffer.alloc(l1Size * 8);
    await fh.read(l1Buf, 0, l1Buf.length, Number(h.readBigUInt64BE(40)));
    const rtBuf = Buffer.alloc(h.readUInt32BE(56) * cs);
    await fh.read(rtBuf, 0, rtBuf.length, Number(h.readBigUInt64BE(48)));
    const entries = (b: Buffer) => Array.from({ length: b.length / 8 }, (_, i) => b.readBigUInt64BE(i * 8));
    return { version: h.readUInt32BE(4), headerLength: h.readUInt32BE(100), refcountOrder: h.readUInt32BE(96), l1: entries(l1Buf), refcountTable: entries(rtBuf) };
  } finally {
    await fh.close();
  }
}

async function expectInvalid(p: Promise<unknown>, message?: RegExp): Promise<void> {
  const e: unknown = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(isSnapyardError(e, 'INVALID_ARGUMENT'), `expected INVALID_ARGUMENT, got ${String(e)}`).toBe(true);
  if (message) expect((e as Error).message).toMatch(message);
}

let fixtures: string;
let base: string;
let baseRaw: string;

beforeAll(async () => {
  fixtures = newDir();
  base = await makeBaseImage(fixtures);
  baseRaw = await toRaw(base, join(fixtures, 'base.raw'));
});

describe('standalone images', () => {
  test.each([
    { clusterBits: 16, zeros: 'write' as const },
    { clusterBits: 12, zeros: 'skip' as const },
    { clusterBits: 21, zeros: 'write' as const },
  ])('a fixture rewritten with $clusterBits-bit clusters (zeros: $zeros) is clean and identical', async ({ clusterBits, zeros }) => {
    const dir = newDir();
    const out = join(dir, 'full.qcow2');
    const t0 = performance.now();
    const r = await qcow2FromRaw(baseRaw, out, { clusterBits, zeros });
    const ms = performance.now() - t0;
    const check = await expectClean(out);
    expect(await guestContentEqual(out, base)).toBe(true);
    const info = await qemuInfo(out);
    expect(info).toMatchObject({ format: 'qcow2', virtualSize: 64 * MiB, clusterSize: 2 ** clusterBits });
    expect(info.backingFilename).toBeUndefined();
    expect(r.fileSize).toBe((await stat(out)).size);
    expect(check['image-end-offset']).toBe(r.fileSize);
    expect(check['allocated-clusters']).toBe(r.dataClusters);
    if (zeros === 'skip') expect(r.zeroClusters).toBe(0);
    else expect(r.zeroClusters).toBeGreaterThan(0);
    const hdr = await inspect(out);
    expect({ version: hdr.version, headerLength: hdr.headerLength, refcountOrder: hdr.refcountOrder }).toEqual({ version: 3, headerLength: 112, refcountOrder: 4 });
    // Nothing but the image itself is left in the directory.
    expect(await readdir(dir)).toEqual(['full.qcow2']);
    console.log(`qcow2 writer: 64 MiB fixture, ${2 ** clusterBits / KiB} KiB clusters: ${r.dataClusters} data + ${r.zeroClusters} zero clusters, ${r.fileSize} bytes, ${ms.toFixed(0)} ms; check: ${JSON.stringify(check)}`);
  });

  test('qemu can keep writing to the image (refcounts and COPIED flags are usable)', async () => {
    const out = join(newDir(), 'rw.qcow2');
    await qcow2FromRaw(baseRaw, out, { clusterBits: 16, zeros: 'write' });
    // Overwrite an allocated cluster in place, allocate new ones, zero a data cluster.
    await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x11 0 4k', '-c', 'write -q -P 0x22 60M 192k', '-c', 'write -q -z 1M 64k', out]);
    await expectClean(out);
    await runTool('qemu-io', ['-f', 'qcow2', '-c', 'read -q -P 0x11 0 4k', '-c', 'read -q -P 0x22 60M 192k', '-c', 'read -q -P 0 1M 64k', out]);
  });

  test('a virtual size that is not a multiple of the cluster size', async () => {
    const dir = newDir();
    const size = 5 * MiB + 3 * 512;
    const raw = join(dir, 'odd.raw');
    const content = Buffer.alloc(size);
    randomBytes(11, 200 * KiB).copy(content, 0);
    randomBytes(12, 64 * KiB).copy(content, 3 * MiB);
    randomBytes(13, 1536).copy(content, size - 1536); // the partial last cluster
    await writeFile(raw, content);
    for (const clusterBits of [16, 21, 9]) {
      const out = join(dir, `odd-${clusterBits}.qcow2`);
      const r = await qcow2FromRaw(raw, out, { clusterBits, zeros: 'write' });
      await expectClean(out);
      expect((await qemuInfo(out)).virtualSize).toBe(size);
      expect(await guestContentEqual(out, raw)).toBe(true);
      expect(r.dataClusters + r.zeroClusters).toBe(Math.ceil(size / 2 ** clusterBits));
    }
  });

  test('an empty image (no writes) is clean and reads zeros', async () => {
    const dir = newDir();
    const zeroRaw = join(dir, 'zero.raw');
    const fh = await open(zeroRaw, 'w');
    await fh.truncate(64 * MiB);
    await fh.close();
    for (const clusterBits of [12, 16, 21]) {
      const out = join(dir, `empty-${clusterBits}.qcow2`);
      const w = await Qcow2Writer.create(out, { virtualSize: 64 * MiB, clusterBits });
      const r = await w.finish();
      expect(r).toMatchObject({ dataClusters: 0, zeroClusters: 0 });
      const check = await expectClean(out);
      expect(check['allocated-clusters'] ?? 0).toBe(0); // qemu-img omits zero counts
      expect(await guestContentEqual(out, zeroRaw)).toBe(true);
    }
    const out0 = join(dir, 'size0.qcow2');
    await (await Qcow2Writer.create(out0, { virtualSize: 0 })).finish();
    await expectClean(out0);
    expect((await qemuInfo(out0)).virtualSize).toBe(0);
  });

  test('8 GiB with 4 KiB clusters: thousands of scattered clusters, several L2 tables and refcount blocks', async () => {
    const dir = newDir();
    const cs = 4 * KiB;
    const size = 8 * GiB;
    const next = mulberry32(2024);
    // Scattered clusters (some in runs of up to 3), and some zero runs in between.
    const picked = new Set<number>();
    while (picked.size < 4000) {
      const c = next() % (size / cs - 3);
      const n = 1 + (next() % 3);
      for (let k = 0; k < n; k++) picked.add(c + k);
    }
    const clusters = [...picked].sort((a, b) => a - b);
    const expected = join(dir, 'expected.raw');
    const efh = await open(expected, 'w');
    await efh.truncate(size);
    const out = join(dir, 'big.qcow2');
    const w = await Qcow2Writer.create(out, { virtualSize: size, clusterBits: 12 });
    const t0 = performance.now();
    const pending: Array<Promise<void>> = [];
    let zeroRuns = 0;
    for (let i = 0; i < clusters.length; i++) {
      const c = clusters[i]!;
      const data = randomBytes(c, cs);
      await efh.write(data, 0, cs, c * cs);
      // Not awaited one by one: the writer applies calls in order.
      pending.push(w.writeData(c * cs, data));
      const gap = (clusters[i + 1] ?? size / cs) - c - 1;
      if (gap >= 8 && i % 5 === 0) {
        pending.push(w.writeZeros((c + 1) * cs, Math.min(gap, 100) * cs));
        zeroRuns++;
      }
    }
    await Promise.all(pending);
    await efh.close();
    const r = await w.finish();
    const ms = performance.now() - t0;
    expect(r.dataClusters).toBe(clusters.length);
    expect(zeroRuns).toBeGreaterThan(100);
    const check = await expectClean(out);
    expect(await guestContentEqual(out, expected)).toBe(true);
    const hdr = await inspect(out);
    expect(hdr.l1.length).toBe(size / cs / (cs / 8));
    const l2Tables = hdr.l1.filter((e) => e !== 0n);
    expect(l2Tables.length).toBeGreaterThan(1000);
    expect(l2Tables.every((e) => e >> 63n === 1n)).toBe(true); // COPIED
    const refcountBlocks = hdr.refcountTable.filter((e) => e !== 0n);
    expect(refcountBlocks.length).toBeGreaterThanOrEqual(3);
    expect(r.fileSize).toBeLessThan(40 * MiB);
    console.log(`qcow2 writer: 8 GiB / 4 KiB clusters: ${r.dataClusters} data + ${r.zeroClusters} zero clusters, ${l2Tables.length} L2 tables, ${refcountBlocks.length} refcount blocks, ${r.fileSize} bytes, ${ms.toFixed(0)} ms; check: ${JSON.stringify(check)}`);
  });
});

describe('overlays', () => {
  let target: string;
  let targetRaw: string;

  beforeAll(async () => {
    const dir = newDir();
    target = await makeVariant(dir, base, 'target');
    // Zero a range that holds data in the base, so the overlay needs zero clusters.
    let zeroAt = -1;
    for await (const { offset, data } of clustersOf(baseRaw, 128 * KiB)) {
      if (offset >= 4 * MiB && !isZero(data.subarray(0, 64 * KiB)) && !isZero(data.subarray(64 * KiB))) {
        zeroAt = offset;
        break;
      }
    }
    expect(zeroAt).toBeGreaterThan(0);
    await runTool('qemu-io', ['-f', 'qcow2', '-c', `write -q -z ${zeroAt} 128k`, target]);
    targetRaw = await toRaw(target, join(dir, 'target.raw'));
  });

  /** Writes the clusters where the target differs from the base. */
  async function writeOverlay(out: string, opts: Qcow2WriterOptions): Promise<Qcow2WriteResult> {
    const cs = 2 ** (opts.clusterBits ?? 16);
    const w = await Qcow2Writer.create(out, opts);
    const b = clustersOf(baseRaw, cs);
    for await (const { offset, data } of clustersOf(targetRaw, cs)) {
      const { value } = await b.next();
      const old = (value as { data: Buffer } | undefined)?.data;
      if (old && old.equals(data)) continue;
      if (isZero(data)) await w.writeZeros(offset, data.length);
      else await w.writeData(offset, data);
    }
    await b.return(undefined);
    return w.finish();
  }

  test.each([
    { how: 'relative', clusterBits: 16 },
    { how: 'absolute', clusterBits: 12 },
  ])('an overlay with a $how backing path ($clusterBits-bit clusters) reads as the target', async ({ how, clusterBits }) => {
    // The overlay lives in a subdirectory of the base's, so a relative name only works if resolved against the image's directory.
    const dir = join(fixtures, `overlay-${how}`);
    await mkdir(dir, { recursive: true });
    const out = join(dir, 'overlay.qcow2');
    const backingFile = how === 'relative' ? '../base.qcow2' : base;
    const t0 = performance.now();
    const r = await writeOverlay(out, { virtualSize: 64 * MiB, clusterBits, backingFile, backingFormat: 'qcow2' });
    const ms = performance.now() - t0;
    const check = await expectClean(out);
    const info = await qemuInfo(out);
    expect(info.backingFilename).toBe(backingFile);
    expect(resolve(info.fullBackingFilename!)).toBe(base);
    expect(info.backingFormat).toBe('qcow2');
    expect(await guestContentEqual(out, target)).toBe(true);
    expect(r.zeroClusters).toBeGreaterThan(0);
    expect(r.dataClusters).toBeGreaterThan(0);
    const targetSize = (await stat(target)).size;
    expect(r.fileSize).toBeLessThan(targetSize / 4);
    // Without the backing file it is a different disk (the overlay really is sparse).
    expect(await guestContentEqual(out, base)).toBe(false);
    console.log(`qcow2 writer: ${how} overlay, ${2 ** clusterBits / KiB} KiB clusters: ${r.dataClusters} data + ${r.zeroClusters} zero clusters, ${r.fileSize} bytes (target ${targetSize}), ${ms.toFixed(0)} ms; check: ${JSON.stringify(check)}`);
  });

  test('an empty overlay reads as its backing file; a raw backing format is recorded', async () => {
    const out = join(fixtures, 'empty-overlay.qcow2');
    await (await Qcow2Writer.create(out, { virtualSize: 64 * MiB, backingFile: 'base.qcow2', backingFormat: 'qcow2' })).finish();
    await expectClean(out);
    expect(await guestContentEqual(out, base)).toBe(true);

    const rawOverlay = join(fixtures, 'raw-overlay.qcow2');
    const w = await Qcow2Writer.create(rawOverlay, { virtualSize: 64 * MiB, backingFile: 'base.raw', backingFormat: 'raw' });
    await w.writeData(0, Buffer.alloc(64 * KiB, 0x5a));
    await w.finish();
    await expectClean(rawOverlay);
    expect(await qemuInfo(rawOverlay)).toMatchObject({ backingFilename: 'base.raw', backingFormat: 'raw' });
    await runTool('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -q -P 0x5a 0 64k', rawOverlay]);
  });
});

describe('arguments, abort and crashes', () => {
  test('bad options are INVALID_ARGUMENT and create nothing', async () => {
    const dir = newDir();
    const p = join(dir, 'x.qcow2');
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: 1000 }), /multiple of 512/);
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: -512 }));
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: 1.5 }));
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: MiB, clusterBits: 8 }), /clusterBits/);
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: MiB, clusterBits: 22 }), /clusterBits/);
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: MiB, backingFormat: 'qcow2' }), /needs a backingFile/);
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: MiB, backingFile: '' }));
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: MiB, backingFile: 'a'.repeat(1024) }));
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: MiB, backingFile: 'b', backingFormat: 'no spaces' }));
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: MiB, clusterBits: 9, backingFile: 'a'.repeat(500) }), /do not fit/);
    await expectInvalid(Qcow2Writer.create(p, { virtualSize: 2 ** 50, clusterBits: 9 }), /too large/);
    expect(await readdir(dir)).toEqual([]);
  });

  test('unaligned, out of order, repeated and out of range writes are INVALID_ARGUMENT', async () => {
    const dir = newDir();
    const p = join(dir, 'x.qcow2');
    const cs = 64 * KiB;
    const w = await Qcow2Writer.create(p, { virtualSize: 10 * cs + 512 });
    const c = Buffer.alloc(cs, 1);
    await expectInvalid(w.writeData(512, c), /not aligned/);
    await expectInvalid(w.writeData(0, Buffer.alloc(cs - 512)), /not a multiple/);
    await expectInvalid(w.writeData(0, new Uint8Array(0)), /positive/);
    await expectInvalid(w.writeZeros(0, 0), /positive/);
    await expectInvalid(w.writeZeros(cs, 100), /not a multiple/);
    await expectInvalid(w.writeData(10 * cs, Buffer.alloc(1024)), /beyond the virtual size/);
    await expectInvalid(w.writeZeros(9 * cs, 2 * cs), /beyond the virtual size/);
    await expectInvalid(w.writeData(11 * cs, c), /beyond the virtual size/);
    await expectInvalid(w.writeData(-cs, c));
    await w.writeData(2 * cs, Buffer.concat([c, c]));
    await expectInvalid(w.writeData(3 * cs, c), /increasing order/); // already written
    await expectInvalid(w.writeData(0, c), /increasing order/); // before what was written
    await expectInvalid(w.writeZeros(2 * cs, cs), /increasing order/);
    await w.writeZeros(4 * cs, cs);
    await expectInvalid(w.writeZeros(4 * cs, cs), /increasing order/);
    await w.writeData(10 * cs, Buffer.alloc(512, 2)); // the partial last cluster
    const r = await w.finish();
    expect(r).toMatchObject({ dataClusters: 3, zeroClusters: 1 });
    await expectClean(p);
    await runTool('qemu-io', ['-f', 'qcow2', '-r', '-c', 'read -q -P 1 128k 128k', '-c', 'read -q -P 0 256k 64k', '-c', 'read -q -P 2 640k 512', p]);
    await expectInvalid(w.writeData(11 * cs, c), /finished/);
    await expectInvalid(w.finish(), /finished/);
    await w.abort(); // a no-op once finished
    expect(existsSync(p)).toBe(true);
  });

  test('abort() removes the temp file, even with writes in flight', async () => {
    const dir = newDir();
    const w = await Qcow2Writer.create(join(dir, 'x.qcow2'), { virtualSize: 64 * MiB });
    expect(await readdir(dir)).toEqual([expect.stringMatching(/^x\.qcow2\.[0-9a-f]+\.tmp$/)]);
    const inFlight = [w.writeData(0, Buffer.alloc(8 * MiB, 3)), w.writeData(8 * MiB, Buffer.alloc(64 * KiB, 4))];
    await w.abort();
    await Promise.allSettled(inFlight);
    expect(await readdir(dir)).toEqual([]);
    await expectInvalid(w.writeData(16 * MiB, Buffer.alloc(64 * KiB)), /aborted/);
    await expectInvalid(w.finish(), /aborted/);
    await w.abort();
  });

  test('a crash before finish() leaves nothing at the path', async () => {
    const dir = newDir();
    const p = join(dir, 'x.qcow2');
    const w = await Qcow2Writer.create(p, { virtualSize: 64 * MiB });
    await w.writeData(0, Buffer.alloc(3 * MiB, 5));
    await w.writeZeros(3 * MiB, MiB);
    // The process dies here: finish() never runs.
    expect(existsSync(p)).toBe(false);
    expect(existsSync(w.tempPath)).toBe(true);
    await w.abort();
    expect(await readdir(dir)).toEqual([]);
  });

  test('finish() replaces an existing file at the path only when complete', async () => {
    const dir = newDir();
    const p = join(dir, 'x.qcow2');
    await writeFile(p, 'old');
    const w = await Qcow2Writer.create(p, { virtualSize: MiB });
    await w.writeData(0, Buffer.alloc(64 * KiB, 9));
    expect((await stat(p)).size).toBe(3);
    await w.finish();
    await expectClean(p);
    expect(await readdir(dir)).toEqual(['x.qcow2']);
  });
});

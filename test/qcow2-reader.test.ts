/**
 * The qcow2 reader (storage/qcow2/) against qemu itself: for images made by
 * qemu-img/qemu-io (v2 and v3, 512 B to 2 MiB clusters, extended L2 entries,
 * zlib and zstd compression, overlays with zero clusters, preallocated
 * metadata, internal snapshots, empty), the header matches `qemu-img info`,
 * the extents match `qemu-img map`, and readGuest matches
 * `qemu-img convert -O raw`. Then hostile files (valid images with patched
 * bytes): each one is refused with QCOW2_INVALID quickly and with little
 * memory, or, where qemu accepts it, read the way qemu reads it.
 */
import { closeSync, copyFileSync, openSync, readFileSync, readSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test, vi } from 'vitest';
import { isSnapyardError } from '../storage/errors.js';
import { HostFile } from '../storage/qcow2/host-file.js';
import { Qcow2Image, type Extent } from '../storage/qcow2/reader.js';
import {
  DEFAULT_OVERLAY_WRITES,
  makeBaseImage,
  makeCompressed,
  makeOverlay,
  makeShuffled,
  makeWithInternalSnapshot,
  randomBytes,
  runTool,
} from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const newDir = tempDirs('snapyard-qcow2r-');
let dir: string;

async function qemuImg(...args: string[]): Promise<string> {
  return (await runTool('qemu-img', args)).stdout;
}
async function qemuIo(path: string, ...cmds: string[]): Promise<void> {
  await runTool('qemu-io', ['-f', 'qcow2', '-t', 'unsafe', ...cmds.flatMap((c) => ['-c', c.replace(/^write /, 'write -q ')]), path]);
}
/** Runs tasks two at a time (the machine has 2 cores). */
async function inPairs(tasks: Array<() => Promise<unknown>>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < tasks.length) await tasks[next++]!();
  };
  await Promise.all([worker(), worker()]);
}

// ---------------------------------------------------------------------------
// Images made by qemu

interface Case {
  path: string;
  /** Backing image for readGuest (overlays). */
  backing?: string;
  /** Expected from qemu-img info as well as read from the file. */
  version: 2 | 3;
  extendedL2?: boolean;
}
const cases = new Map<string, Case>();
const CASE_NAMES = [
  'v3 64k (base)',
  'v2 64k',
  'v3 512B',
  'v2 512B',
  'v3 4k',
  'v3 2M',
  'extended L2 128k',
  'extended L2 128k sparse writes',
  'extended L2 overlay',
  'zlib compressed',
  'zlib compressed 512B',
  'zstd compressed',
  'zstd compressed 2M',
  'v2 compressed',
  'overlay with zero clusters',
  'v2 overlay',
  'internal snapshot',
  'shuffled',
  'preallocated metadata',
  'empty',
  'empty, size 0',
  'partial last cluster',
] as const;
type CaseName = (typeof CASE_NAMES)[number];
let buildMs = 0;

beforeAll(async () => {
  const t0 = performance.now();
  dir = newDir();
  const base = await makeBaseImage(dir);
  const raw = join(dir, 'base.raw');
  await qemuImg('convert', '-O', 'raw', base, raw);
  const p = (name: string) => join(dir, `${name}.qcow2`);
  const add = (name: CaseName, c: Case) => cases.set(name, c);
  const fromRaw = async (name: CaseName, file: string, opts: string, version: 2 | 3, extra: string[] = []) => {
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', ...extra, '-o', opts, raw, p(file));
    add(name, { path: p(file), version, extendedL2: opts.includes('extended_l2=on') });
  };
  add('v3 64k (base)', { path: base, version: 3 });
  await inPairs([
    () => fromRaw('v2 64k', 'v2-64k', 'compat=0.10', 2),
    () => fromRaw('v3 512B', 'v3-512', 'cluster_size=512', 3),
    () => fromRaw('v2 512B', 'v2-512', 'compat=0.10,cluster_size=512', 2),
    () => fromRaw('v3 4k', 'v3-4k', 'cluster_size=4096', 3),
    () => fromRaw('v3 2M', 'v3-2m', 'cluster_size=2M', 3),
    async () => {
      // Full clusters, then subcluster-sized zero writes and partial rewrites.
      await fromRaw('extended L2 128k', 'extl2', 'extended_l2=on,cluster_size=128k', 3);
      await qemuIo(p('extl2'), 'write -z 132k 8k', 'write -P 0x66 1M 4k', 'write -z 2M 128k', `write -P 0x77 ${3 * MiB + 12 * KiB} 20k`, `write -z ${5 * MiB + 4 * KiB} 100k`);
    },
    async () => {
      await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k', p('extl2-sparse'), '64M']);
      await qemuIo(p('extl2-sparse'), 'write -P 0x11 4k 8k', 'write -z 64k 4k', 'write -P 0x12 1M 128k', `write -P 0x13 ${2 * MiB + 124 * KiB} 8k`, 'write -z 10M 256k', `write -P 0x14 ${63 * MiB + 60 * KiB} 4k`);
      add('extended L2 128k sparse writes', { path: p('extl2-sparse'), version: 3, extendedL2: true });
    },
    async () => {
      await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k', '-b', 'base.qcow2', '-F', 'qcow2', p('extl2-overlay')]);
      await qemuIo(p('extl2-overlay'), 'write -P 0x21 4k 8k', 'write -z 68k 4k', 'write -P 0x22 1M 12k', 'write -z 2M 256k', 'write -P 0x23 40000k 3k');
      add('extended L2 overlay', { path: p('extl2-overlay'), backing: base, version: 3, extendedL2: true });
    },
    async () => add('zlib compressed', { path: await makeCompressed(dir, base), version: 3 }),
    () => fromRaw('zlib compressed 512B', 'zlib-512', 'cluster_size=512', 3, ['-c']),
    () => fromRaw('zstd compressed', 'zstd', 'compression_type=zstd', 3, ['-c']),
    () => fromRaw('zstd compressed 2M', 'zstd-2m', 'compression_type=zstd,cluster_size=2M', 3, ['-c']),
    () => fromRaw('v2 compressed', 'v2-compressed', 'compat=0.10', 2, ['-c']),
    async () => add('overlay with zero clusters', { path: await makeOverlay(dir, base, 'overlay', [...DEFAULT_OVERLAY_WRITES, `write -z ${MiB + 64 * KiB} 64k`]), backing: base, version: 3 }),
    async () => {
      await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2', p('v2-overlay')]);
      await qemuIo(p('v2-overlay'), 'write -P 0x31 1M 256k', 'write -z 8M 128k', 'write -P 0x32 40000k 3k');
      add('v2 overlay', { path: p('v2-overlay'), backing: base, version: 2 });
    },
    async () => add('internal snapshot', { path: await makeWithInternalSnapshot(dir, base), version: 3 }),
    async () => add('shuffled', { path: await makeShuffled(dir, base), version: 3 }),
    async () => {
      await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', p('prealloc'), '64M']);
      await qemuIo(p('prealloc'), 'write -P 0x41 0 300k', 'write -P 0x42 20M 64k', 'write -z 21M 64k');
      add('preallocated metadata', { path: p('prealloc'), version: 3 });
    },
    async () => {
      await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', p('empty'), '64M']);
      add('empty', { path: p('empty'), version: 3 });
    },
    async () => {
      await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', p('empty0'), '0']);
      add('empty, size 0', { path: p('empty0'), version: 3 });
    },
    async () => {
      await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', p('partial'), String(MiB + 1536)]);
      await qemuIo(p('partial'), 'write -P 0x51 0 4k', `write -P 0x52 ${MiB} 1536`);
      add('partial last cluster', { path: p('partial'), version: 3 });
    },
  ]);
  buildMs = performance.now() - t0;
  console.log(`qcow2 reader fixtures built in ${Math.round(buildMs)} ms`);
});

// ---------------------------------------------------------------------------
// Comparing with qemu-img map

interface Run {
  start: number;
  length: number;
  kind: 'data' | 'zero' | 'unallocated' | 'compressed';
  offset?: number;
}

/** Adjacent runs of the same kind merged (data only when host offsets continue; compressed runs merged, as qemu-img map does). */
function mergeRuns(runs: Run[]): Run[] {
  const out: Run[] = [];
  for (const r of runs) {
    if (r.length === 0) continue;
    const p = out[out.length - 1];
    if (p && p.kind === r.kind && p.start + p.length === r.start && (r.kind !== 'data' || p.offset! + p.length === r.offset)) p.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/**
 * `qemu-img map --output=json`, as this layer's runs: depth > 0 or not
 * present is unallocated here; data with an offset is data (zero may also be
 * set, for preallocated clusters the file has a hole at); data without an
 * offset is compressed; present, not data, zero is a zero cluster.
 */
async function qemuRuns(path: string): Promise<Run[]> {
  const entries = JSON.parse(await qemuImg('map', '--output=json', '-U', path)) as MapEntry[];
  return mergeRuns(
    entries.map((e): Run => {
      if (e.depth > 0 || !e.present) return { start: e.start, length: e.length, kind: 'unallocated' };
      if (e.data) return e.offset !== undefined ? { start: e.start, length: e.length, kind: 'data', offset: e.offset } : { start: e.start, length: e.length, kind: 'compressed' };
      if (e.zero) return { start: e.start, length: e.length, kind: 'zero' };
      throw new Error(`unexpected qemu-img map entry ${JSON.stringify(e)}`);
    }),
  );
}

function ourRuns(extents: Iterable<Extent>): Run[] {
  return mergeRuns([...extents].map((e) => ({ start: e.guestOffset, length: e.length, kind: e.kind, ...(e.kind === 'data' ? { offset: e.hostOffset! } : {}) })));
}

/** Compares readGuest (in odd-sized pieces, so reads start mid-cluster) with qemu-img convert -O raw. */
async function expectGuestMatchesQemu(img: Qcow2Image, path: string, backing?: Qcow2Image): Promise<void> {
  const raw = join(dir, `cmp-${Math.random().toString(36).slice(2)}.raw`);
  await qemuImg('convert', '-U', '-O', 'raw', path, raw);
  expect(statSync(raw).size).toBe(img.virtualSize);
  const fd = openSync(raw, 'r');
  try {
    const piece = 3 * MiB + 4097;
    const want = Buffer.alloc(piece);
    for (let off = 0; off < img.virtualSize; off += piece) {
      const len = Math.min(piece, img.virtualSize - off);
      readSync(fd, want, 0, len, off);
      const got = img.readGuest(off, len, backing);
      if (!got.equals(want.subarray(0, len))) {
        let i = 0;
        while (got[i] === want[i]) i++;
        throw new Error(`${path}: guest bytes differ from qemu at 0x${(off + i).toString(16)}`);
      }
    }
  } finally {
    closeSync(fd);
  }
}

describe('qcow2 reader vs qemu', () => {
  test('fixtures build', () => {
    expect([...cases.keys()].sort()).toEqual([...CASE_NAMES].sort());
  });

  test.each(CASE_NAMES)('%s: header matches qemu-img info', async (name) => {
    const c = cases.get(name)!;
    const info = JSON.parse(await qemuImg('info', '--output=json', '-U', c.path)) as Record<string, unknown>;
    const fmt = (info['format-specific'] as { data: Record<string, unknown> }).data;
    const img = Qcow2Image.open(c.path);
    try {
      expect(img.virtualSize).toBe(info['virtual-size']);
      expect(img.clusterSize).toBe(info['cluster-size']);
      expect(img.backingFile).toBe(info['backing-filename']);
      expect(img.backingFormat).toBe(info['backing-filename-format']);
      expect(img.header.version).toBe(c.version);
      expect(fmt['compat']).toBe(c.version === 2 ? '0.10' : '1.1');
      expect(img.header.compressionType).toBe(fmt['compression-type']);
      expect(2 ** img.header.refcountOrder).toBe(fmt['refcount-bits']);
      if (c.version === 3) {
        expect(img.header.extendedL2).toBe(fmt['extended-l2']);
        expect(img.header.extendedL2).toBe(c.extendedL2 ?? false);
        expect(img.header.lazyRefcounts).toBe(fmt['lazy-refcounts']);
      }
      expect(img.header.dirty).toBe(info['dirty-flag'] ?? false);
      const snaps = (info['snapshots'] as Array<Record<string, unknown>> | undefined) ?? [];
      expect(img.snapshots.map((s) => ({ id: s.id, name: s.name, vmStateSize: s.vmStateSize, dateSec: s.dateSec, dateNsec: s.dateNsec }))).toEqual(
        snaps.map((s) => ({ id: s['id'], name: s['name'], vmStateSize: s['vm-state-size'], dateSec: s['date-sec'], dateNsec: s['date-nsec'] })),
      );
      if (name === 'internal snapshot') {
        expect(img.snapshots).toHaveLength(1);
        expect(img.snapshots[0]!.virtualSize).toBe(img.virtualSize);
        expect(img.snapshots[0]!.l1Size).toBeGreaterThanOrEqual(img.header.l1EntriesNeeded);
        expect(img.snapshots[0]!.l1TableOffset).not.toBe(img.header.l1TableOffset);
      }
    } finally {
      img.close();
    }
  });

  test.each(CASE_NAMES)('%s: extents match qemu-img map', async (name) => {
    const c = cases.get(name)!;
    const img = Qcow2Image.open(c.path);
    try {
      const extents = [...img.extents()];
      // Guest order, no gaps, covering the disk exactly.
      let at = 0;
      for (const e of extents) {
        expect(e.guestOffset).toBe(at);
        expect(e.length).toBeGreaterThan(0);
        at += e.length;
      }
      expect(at).toBe(img.virtualSize);
      // Our own merging: no two neighbours that should have been one extent.
      for (let i = 1; i < extents.length; i++) {
        const [p, e] = [extents[i - 1]!, extents[i]!];
        if (e.kind === p.kind && e.kind !== 'compressed') expect(e.kind === 'data' && p.hostOffset! + p.length !== e.hostOffset).toBe(true);
      }
      if (img.virtualSize > 0) expect(ourRuns(extents)).toEqual(await qemuRuns(c.path));
      const kinds = new Set(extents.map((e) => e.kind));
      if (name.includes('compressed')) expect(kinds.has('compressed')).toBe(true);
      if (name.includes('zero') || name.startsWith('extended') || name === 'preallocated metadata') expect(kinds.has('zero')).toBe(true);
      if (name.startsWith('v2')) expect(kinds.has('zero')).toBe(false);
      if (name.startsWith('empty')) expect(kinds).toEqual(new Set(img.virtualSize ? ['unallocated'] : []));
      // A sub-range walk is the whole walk clipped.
      if (img.virtualSize > 0) {
        const [s, e] = [Math.floor(img.virtualSize / 3) + 777, Math.floor((2 * img.virtualSize) / 3) + 5];
        const clipped = ourRuns(
          extents
            .filter((x) => x.guestOffset + x.length > s && x.guestOffset < e)
            .map((x) => {
              const a = Math.max(s, x.guestOffset);
              const b = Math.min(e, x.guestOffset + x.length);
              return { ...x, guestOffset: a, length: b - a, ...(x.kind === 'data' ? { hostOffset: x.hostOffset! + (a - x.guestOffset) } : {}) };
            }),
        );
        expect(ourRuns(img.extents(s, e))).toEqual(clipped);
      }
    } finally {
      img.close();
    }
  });

  test.each(CASE_NAMES)('%s: readGuest matches qemu-img convert -O raw', async (name) => {
    const c = cases.get(name)!;
    const backing = c.backing ? Qcow2Image.open(c.backing) : undefined;
    const img = Qcow2Image.open(c.path);
    try {
      await expectGuestMatchesQemu(img, c.path, backing);
    } finally {
      img.close();
      backing?.close();
    }
  });

  test('compressed extents: descriptor fields are sane, clusters decode with both codecs', () => {
    for (const name of ['zlib compressed', 'zlib compressed 512B', 'zstd compressed', 'zstd compressed 2M', 'v2 compressed'] as const) {
      const img = Qcow2Image.open(cases.get(name)!.path);
      try {
        const comp = [...img.extents()].filter((e) => e.kind === 'compressed');
        expect(comp.length, name).toBeGreaterThan(3);
        for (const e of comp) {
          expect(e.guestOffset % img.clusterSize).toBe(0);
          expect(e.compressedSize!).toBeGreaterThan(0);
          expect(e.compressedSize!).toBeLessThanOrEqual(2 * img.clusterSize);
          expect(e.hostOffset! + e.compressedSize!).toBeLessThanOrEqual(Math.ceil(img.fileSize / 512) * 512);
        }
        expect(img.header.compressionType).toBe(name.startsWith('zstd') ? 'zstd' : 'zlib');
      } finally {
        img.close();
      }
    }
  });

  test('an overlay without its backing reader reads zeros where it is unallocated; with the default backing from open() it reads through', () => {
    const c = cases.get('overlay with zero clusters')!;
    const base = Qcow2Image.open(c.backing!);
    const alone = Qcow2Image.open(c.path);
    const chained = Qcow2Image.open(c.path, { backing: base });
    try {
      const un = [...alone.extents()].find((e) => e.kind === 'unallocated' && e.guestOffset === 0)!;
      expect(un).toBeDefined();
      const len = Math.min(un.length, 256 * KiB);
      expect(alone.readGuest(0, len).equals(Buffer.alloc(len))).toBe(true);
      expect(chained.readGuest(0, len).equals(base.readGuest(0, len))).toBe(true);
      expect(base.readGuest(0, len).equals(Buffer.alloc(len))).toBe(false);
      // Interleaved walks (reading while iterating) do not disturb each other.
      let n = 0;
      for (const e of chained.extents()) {
        const l = Math.min(e.length, 4096);
        expect(chained.readGuest(e.guestOffset, l).length).toBe(l);
        n++;
      }
      expect(n).toBe([...chained.extents()].length);
    } finally {
      chained.close();
      alone.close();
      base.close();
    }
  });

  test('sniff: true for qcow2, false for raw and short files', () => {
    expect(Qcow2Image.sniff(cases.get('v2 64k')!.path)).toBe(true);
    expect(Qcow2Image.sniff(cases.get('empty, size 0')!.path)).toBe(true);
    const raw = join(dir, 'not-qcow2.raw');
    writeFileSync(raw, randomBytes(1, 70_000));
    expect(Qcow2Image.sniff(raw)).toBe(false);
    expectInvalid(() => Qcow2Image.open(raw), /not a qcow2 image/);
    const tiny = join(dir, 'tiny');
    writeFileSync(tiny, Buffer.from([0x51, 0x46]));
    expect(Qcow2Image.sniff(tiny)).toBe(false);
  });

  test('speed: the extent walk of a 2 GiB image (64 KiB clusters) reads L1 and L2 only; 1 PiB empty image in bounded memory', async () => {
    const big = join(dir, 'big2g.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', big, '2G']);
    await qemuIo(big, ...Array.from({ length: 16 }, (_, i) => `write -P ${i + 1} ${i * 128 + 3}M 1M`));
    const img = Qcow2Image.open(big);
    const exact = vi.spyOn(HostFile.prototype, 'readExact');
    const zeroFilled = vi.spyOn(HostFile.prototype, 'readZeroFilled');
    try {
      const t0 = performance.now();
      const extents = [...img.extents()];
      const ms = performance.now() - t0;
      // What the walk read: 4 L1 entries (512 MiB each), then the 4 L2 tables (one cluster each), nothing else.
      expect(exact.mock.calls.map(([buf, pos]) => [pos, buf.byteLength])).toEqual([
        [img.header.l1TableOffset, 4 * 8],
        ...Array.from({ length: 4 }, () => [expect.any(Number), 64 * KiB]),
      ]);
      expect(zeroFilled).not.toHaveBeenCalled();
      exact.mockRestore();
      zeroFilled.mockRestore();
      console.log(`2 GiB extent walk: ${ms.toFixed(1)} ms, ${extents.length} extents`);
      expect(extents.filter((e) => e.kind === 'data')).toHaveLength(16);
      expect(ms).toBeLessThan(500);
      expect(ourRuns(extents)).toEqual(await qemuRuns(big));
    } finally {
      exact.mockRestore();
      zeroFilled.mockRestore();
      img.close();
    }
    const peta = join(dir, 'peta.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', peta, '1P']);
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const p = Qcow2Image.open(peta);
    try {
      expect(p.header.l1Size * 8).toBe(16 * MiB);
      const ex = [...p.extents()];
      expect(ex).toEqual([{ guestOffset: 0, length: 2 ** 50, kind: 'unallocated' }]);
      console.log(`1 PiB empty extent walk: ${(performance.now() - t0).toFixed(1)} ms, rss +${((process.memoryUsage().rss - rss0) / MiB).toFixed(1)} MiB`);
      expect(process.memoryUsage().rss - rss0).toBeLessThan(8 * MiB);
      expect(p.readGuest(2 ** 50 - 4096, 4096).equals(Buffer.alloc(4096))).toBe(true);
    } finally {
      p.close();
    }
  });
});

// ---------------------------------------------------------------------------
// Hostile inputs

function expectInvalid(fn: () => unknown, re?: RegExp): void {
  const t0 = performance.now();
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isSnapyardError(err, 'QCOW2_INVALID'), `expected QCOW2_INVALID, got ${String(err)}`).toBe(true);
  if (re) expect((err as Error).message).toMatch(re);
  expect(performance.now() - t0).toBeLessThan(2000);
}

/** Opens, walks and reads everything (what a caller would do). */
function readAll(path: string): Buffer {
  const img = Qcow2Image.open(path);
  try {
    for (const _ of img.extents()) void _;
    return img.readGuest(0, img.virtualSize);
  } finally {
    img.close();
  }
}

describe('qcow2 reader: hostile files', () => {
  let small: string; // v3, 64 KiB clusters, 4 MiB: data, a zero cluster
  let smallCompressed: string;
  let smallOverlay: string;
  let smallExtL2: string;
  let n = 0;
  const be = (b: Buffer, at: number) => Number(b.readBigUInt64BE(at));

  /** A copy of `src` with `edit` applied to its bytes. */
  function patched(src: string, edit: (b: Buffer) => void): string {
    const b = readFileSync(src);
    edit(b);
    const out = join(dir, `hostile-${n++}.qcow2`);
    writeFileSync(out, b);
    return out;
  }
  const l1Offset = (b: Buffer) => be(b, 40);
  const l2Offset = (b: Buffer) => Number(b.readBigUInt64BE(l1Offset(b)) & 0x00ff_ffff_ffff_fe00n);

  beforeAll(async () => {
    small = join(dir, 'small.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', small, '4M']);
    await qemuIo(small, 'write -P 0x11 0 192k', 'write -P 0x22 1M 64k', 'write -z 2M 64k');
    smallCompressed = join(dir, 'small-c.qcow2');
    await qemuImg('convert', '-c', '-O', 'qcow2', small, smallCompressed);
    smallOverlay = join(dir, 'small-o.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'small.qcow2', '-F', 'qcow2', smallOverlay]);
    smallExtL2 = join(dir, 'small-x.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=64k', smallExtL2, '4M']);
    await qemuIo(smallExtL2, 'write -P 0x33 0 8k', 'write -z 8k 4k');
  });

  test('the unpatched small images read like qemu', async () => {
    for (const p of [small, smallCompressed, smallExtL2]) {
      const img = Qcow2Image.open(p);
      try {
        await expectGuestMatchesQemu(img, p);
      } finally {
        img.close();
      }
    }
  });

  test('truncated file', () => {
    const size = statSync(small).size;
    for (const cut of [0, 3, 50, 100, 65536, l2Offset(readFileSync(small)) + 100]) {
      const p = join(dir, `trunc-${cut}.qcow2`);
      copyFileSync(small, p);
      truncateSync(p, cut);
      expectInvalid(() => readAll(p));
    }
    // Cut inside the last data cluster: qemu reads the missing tail as zeros, so do we.
    const p = join(dir, 'trunc-data.qcow2');
    copyFileSync(small, p);
    truncateSync(p, size - 1000);
    const g = readAll(p);
    expect(g.subarray(1 * MiB, 1 * MiB + 64 * KiB - 1000).every((x) => x === 0x22)).toBe(true);
    expect(g.subarray(1 * MiB + 64 * KiB - 1000, 1 * MiB + 64 * KiB).every((x) => x === 0)).toBe(true);
  });

  test('L1 table offset past EOF or unaligned; l1_size huge or too small for the virtual size', () => {
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 40n, 40))), /l1_table_offset.*past the end/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(BigInt(l1Offset(b) + 8), 40))), /l1_table_offset.*aligned/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(0xffff_ffff_ffff_0000n, 40))), /l1_table_offset/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(0xffffffff, 36))), /l1_size 4294967295 is too large/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(0, 36))), /l1_size 0 is too small/);
    // The largest L1 qemu allows (32 MiB), in a small file: refused before anything that size is allocated.
    const p = patched(small, (b) => b.writeUInt32BE((32 * MiB) / 8, 36));
    const rss0 = process.memoryUsage().rss;
    expectInvalid(() => readAll(p), /past the end/);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(4 * MiB);
    // Virtual size beyond what the L1 table can map.
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 40n, 24))), /too small for the virtual size/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 62n, 24))), /size .* out of range/);
  });

  test('L2 table offset unaligned or past EOF; data cluster past EOF or unaligned', () => {
    const setL1 = (v: bigint) => (b: Buffer) => b.writeBigUInt64BE(v, l1Offset(b));
    expectInvalid(() => readAll(patched(small, (b) => setL1(BigInt(l2Offset(b) + 512) | (1n << 63n))(b))), /L2 table offset .* not cluster aligned/);
    expectInvalid(() => readAll(patched(small, setL1((1n << 40n) | (1n << 63n)))), /L2 table .* past the end/);
    const setL2 = (v: bigint) => (b: Buffer) => b.writeBigUInt64BE(v, l2Offset(b));
    expectInvalid(() => readAll(patched(small, setL2((1n << 40n) | (1n << 63n)))), /data cluster .* past the end/);
    expectInvalid(() => readAll(patched(small, (b) => setL2(b.readBigUInt64BE(l2Offset(b)) + 4096n)(b))), /not cluster aligned/);
    // A zero flag in a version 2 image is corruption (qemu refuses to read it too).
    const v2 = join(dir, 'small-v2.qcow2');
    writeFileSync(v2, readFileSync(cases.get('v2 64k')!.path));
    expectInvalid(() => readAll(patched(v2, (b) => b.writeUInt32BE(b.readUInt32BE(l2Offset(b) + 4) | 1, l2Offset(b) + 4))), /zero flag in a version 2/);
  });

  test('self-referencing tables are read as qemu reads them (bounded walk, no loop)', async () => {
    // L1 entry 0 pointing at the L1 table itself, and L2 entry 0 pointing at the L1 table / its own L2 table.
    const variants = [
      patched(small, (b) => b.writeBigUInt64BE(BigInt(l1Offset(b)) | (1n << 63n), l1Offset(b))),
      patched(small, (b) => b.writeBigUInt64BE(BigInt(l1Offset(b)) | (1n << 63n), l2Offset(b))),
      patched(small, (b) => b.writeBigUInt64BE(BigInt(l2Offset(b)) | (1n << 63n), l2Offset(b) + 8)),
    ];
    for (const p of variants) {
      const t0 = performance.now();
      const img = Qcow2Image.open(p);
      try {
        expect(ourRuns(img.extents())).toEqual(await qemuRuns(p));
        await expectGuestMatchesQemu(img, p);
      } finally {
        img.close();
      }
      expect(performance.now() - t0).toBeLessThan(5000);
    }
  });

  test('cluster_bits 8 and 22, header_length out of range, extension past the cluster', () => {
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(8, 20))), /cluster_bits 8/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(22, 20))), /cluster_bits 22/);
    for (const len of [0, 64, 72, 96]) expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(len, 100))), new RegExp(`header_length ${len} is less`));
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(64 * KiB + 8, 100))), /header_length 65544 exceeds/);
    // The first extension (the feature name table) with a length running past the first cluster.
    const hl = readFileSync(small).readUInt32BE(100);
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(0xffff0000, hl + 4))), /header extension .* runs past/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(64 * KiB, hl + 4))), /header extension .* runs past/);
    // Version and magic.
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(4, 4))), /unsupported version 4/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(0x514649fa, 0))), /not a qcow2 image/);
  });

  test('snapshot table: nb_snapshots huge, offset past EOF, entry lengths past EOF', () => {
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(0xffffffff, 60))), /nb_snapshots 4294967295 is too large/);
    const rss0 = process.memoryUsage().rss;
    expectInvalid(() => readAll(patched(small, (b) => (b.writeUInt32BE(65536, 60), b.writeBigUInt64BE(64n * 1024n, 64)))), /snapshots_offset .* past the end/);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(4 * MiB);
    expectInvalid(() => readAll(patched(small, (b) => (b.writeUInt32BE(1, 60), b.writeBigUInt64BE(1n << 40n, 64)))), /past the end/);
    const snap = cases.get('internal snapshot')!.path;
    const so = be(readFileSync(snap), 64);
    // The entry moved to a new last cluster, with a name length running past the end of the file.
    const moved = join(dir, 'snap-moved.qcow2');
    const orig = readFileSync(snap);
    const end = Math.ceil(orig.length / (64 * KiB)) * 64 * KiB;
    const grown = Buffer.concat([orig, Buffer.alloc(end - orig.length), orig.subarray(so, so + 64 * KiB)]);
    grown.writeBigUInt64BE(BigInt(end), 64);
    grown.writeUInt16BE(0xffff, end + 14);
    writeFileSync(moved, grown.subarray(0, end + 4096));
    expectInvalid(() => readAll(moved), /snapshot table entry 0 at .* past the end/);
    expectInvalid(() => readAll(patched(snap, (b) => b.writeUInt32BE(0x10000000, so + 36))), /extra data size/);
    expectInvalid(() => readAll(patched(snap, (b) => b.writeBigUInt64BE(1n << 40n, so))), /snapshot table entry 0: L1 table offset .* past the end/);
    expectInvalid(() => readAll(patched(snap, (b) => b.writeUInt32BE(0xffffffff, so + 8))), /l1_size 4294967295 is too large/);
  });

  test('compressed descriptor past EOF; garbage compressed data', () => {
    const l2e = (b: Buffer) => l2Offset(b); // entry 0 is compressed
    expectInvalid(() => readAll(patched(smallCompressed, (b) => b.writeBigUInt64BE((1n << 62n) | (1n << 40n), l2e(b)))), /compressed data .* past the end/);
    // Offset inside the file, sector count running far past it.
    expectInvalid(
      () => readAll(patched(smallCompressed, (b) => b.writeBigUInt64BE((1n << 62n) | (0xffn << 54n) | BigInt(b.length - 100), l2e(b)))),
      /compressed data .* past the end/,
    );
    // Valid descriptor, garbage bytes: a decode error, not a crash or a short cluster.
    expectInvalid(() =>
      readAll(
        patched(smallCompressed, (b) => {
          const off = Number(b.readBigUInt64BE(l2e(b)) & ((1n << 54n) - 1n));
          randomBytes(5, 400).copy(b, off);
        }),
      ),
    /compressed cluster .* zlib/);
  });

  test('backing file name and format: lengths past the cluster or qemu limits', () => {
    const hostile = [
      (b: Buffer) => b.writeUInt32BE(0xffffffff, 16),
      (b: Buffer) => b.writeUInt32BE(1024, 16),
      (b: Buffer) => b.writeBigUInt64BE(1n << 20n, 8),
    ];
    for (const h of hostile) expectInvalid(() => readAll(patched(smallOverlay, h)), /backing_file/);
    const img = Qcow2Image.open(smallOverlay);
    expect([img.backingFile, img.backingFormat]).toEqual(['small.qcow2', 'qcow2']);
    img.close();
    // The backing format extension longer than qemu allows.
    const b = readFileSync(smallOverlay);
    let at = b.readUInt32BE(100);
    while (b.readUInt32BE(at) !== 0xe2792aca) at += 8 + Math.ceil(b.readUInt32BE(at + 4) / 8) * 8;
    expectInvalid(() => readAll(patched(smallOverlay, (x) => x.writeUInt32BE(16, at + 4))), /backing file format extension length 16/);
  });

  test('features: encryption, corrupt, external data, unknown bits refused; dirty reported; compression type consistent', async () => {
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(1, 32))), /encrypted.*AES/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeUInt32BE(2, 32))), /encrypted.*LUKS/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 1n, 72))), /marked corrupt/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 2n, 72))), /external data/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 9n, 72))), /unknown incompatible feature bits 9/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 63n, 72))), /unknown incompatible feature bits 63/);
    expectInvalid(() => readAll(patched(small, (b) => b.writeBigUInt64BE(1n << 3n, 72))), /compression_type 0 does not match/);
    expectInvalid(() => readAll(patched(small, (b) => (b[104] = 1))), /compression_type 1 does not match/);
    expectInvalid(() => readAll(patched(small, (b) => (b.writeBigUInt64BE(1n << 3n, 72), (b[104] = 7)))), /unknown compression_type 7/);
    // Extended L2 on clusters smaller than 16 KiB.
    expectInvalid(() => readAll(patched(cases.get('v3 4k')!.path, (b) => b.writeBigUInt64BE(1n << 4n, 72))), /extended L2 entries need cluster_bits >= 14/);
    // A real image with an external data file.
    const df = join(dir, 'datafile.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'datafile.raw')}`, df, '1M']);
    expectInvalid(() => readAll(df), /external data/);
    // Dirty: reported, read normally.
    const dirty = patched(small, (b) => b.writeBigUInt64BE(1n, 72));
    const img = Qcow2Image.open(dirty);
    try {
      expect(img.header.dirty).toBe(true);
      expect(img.readGuest(0, 192 * KiB).every((x) => x === 0x11)).toBe(true);
    } finally {
      img.close();
    }
    // Compatible and autoclear bits we do not know are ignored.
    expect(readAll(patched(small, (b) => (b.writeBigUInt64BE(0xfff0n, 80), b.writeBigUInt64BE(0xfff0n, 88)))).equals(readAll(small))).toBe(true);
  });

  test('extended L2: subclusters both allocated and zero, or allocated without an offset', () => {
    const setBitmap = (alloc: number, zero: number, clearOffset = false) => (b: Buffer) => {
      const e = l2Offset(b);
      if (clearOffset) b.writeBigUInt64BE(0n, e);
      b.writeUInt32BE(zero, e + 8);
      b.writeUInt32BE(alloc, e + 12);
    };
    expectInvalid(() => readAll(patched(smallExtL2, setBitmap(0b11, 0b10))), /both allocated and zero/);
    expectInvalid(() => readAll(patched(smallExtL2, setBitmap(0b1, 0, true))), /without a cluster offset/);
  });
});

/**
 * Small, realistic qcow2 fixtures built on the fly with qemu-img, qemu-io and
 * mtools: a FAT disk that looks like a tiny Windows 98 install (random
 * "binaries", compressible text, a zero-filled swap file, free space), and
 * images derived from it (full variants, overlays, same content with a
 * different host layout, compressed, with an internal snapshot).
 *
 * Everything is deterministic: the same seed and options give the same bytes
 * (mtools honours SOURCE_DATE_EPOCH and gets a fixed volume serial; the
 * snapshot table's wall-clock time is overwritten with a fixed one). Every
 * file, including intermediates, is created inside the directory passed in.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** Debian package that provides each external tool. */
const TOOL_PACKAGES: Record<string, string> = {
  'qemu-img': 'qemu-utils',
  'qemu-io': 'qemu-utils',
  mformat: 'mtools',
  mmd: 'mtools',
  mcopy: 'mtools',
  mdel: 'mtools',
  mdir: 'mtools',
  skopeo: 'skopeo',
};

/** 1998-07-09T16:00:00Z: every FAT timestamp and the snapshot date. */
export const FIXTURE_EPOCH = 900_000_000;

const MiB = 1024 * 1024;
const KiB = 1024;

export interface RunResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs one of the fixture tools. A missing tool becomes an error that names
 * the Debian package to install; a failing one carries its stderr.
 */
export async function runTool(tool: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  try {
    const r = await execFileP(tool, args, {
      maxBuffer: 64 * MiB,
      encoding: 'utf8',
      env: { ...process.env, SOURCE_DATE_EPOCH: String(FIXTURE_EPOCH), MTOOLS_SKIP_CHECK: '1', LC_ALL: 'C', ...opts.env },
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    return { stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: string | number; stdout?: string; stderr?: string; message: string };
    if (err.code === 'ENOENT') {
      const pkg = TOOL_PACKAGES[tool];
      throw new Error(`${tool} is not installed${pkg ? ` (Debian package "${pkg}": apt-get install ${pkg})` : ''}`);
    }
    const shown = args.length > 12 ? [...args.slice(0, 12), `... (${args.length - 12} more args)`] : args;
    throw new Error(`${tool} ${shown.join(' ')} failed (exit ${String(err.code)}): ${(err.stderr ?? '').trim() || (err.stdout ?? '').trim() || err.message}`);
  }
}

/** Throws a clear error if any fixture tool is missing. */
export async function checkFixtureTools(): Promise<void> {
  await runTool('qemu-img', ['--version']);
  await runTool('qemu-io', ['--version']);
  await runTool('mformat', ['--version']);
}

// ---------------------------------------------------------------------------
// Deterministic content

/** mulberry32: tiny, fast, seeded 32-bit PRNG. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Seed derived from a base seed and a label (so each file gets its own stream). */
export function subSeed(seed: number, label: string): number {
  return createHash('sha256').update(`${seed}:${label}`).digest().readUInt32LE(0);
}

/** `size` incompressible bytes. */
export function randomBytes(seed: number, size: number): Buffer {
  const next = mulberry32(seed);
  const out = Buffer.allocUnsafe(size);
  let i = 0;
  for (; i + 4 <= size; i += 4) out.writeUInt32LE(next(), i);
  if (i < size) {
    const last = next();
    for (let k = 0; i < size; i++, k++) out[i] = (last >>> (8 * k)) & 0xff;
  }
  return out;
}

const WORDS = (
  'windows system driver device setup display network printer keyboard mouse font registry ' +
  'volume cluster sector memory virtual protected mode kernel user shell explorer desktop ' +
  'control panel modem dial-up adapter protocol config autoexec command path temp swap file ' +
  'version copyright microsoft corporation reserved installed default enabled disabled value'
).split(' ');

/** `size` bytes of INI/help-like text (compresses well, yet not trivially repetitive). */
export function textBytes(seed: number, size: number): Buffer {
  const next = mulberry32(seed);
  const parts: string[] = [];
  let len = 0;
  let line = 0;
  while (len < size) {
    let s: string;
    if (line % 17 === 0) s = `[${WORDS[next() % WORDS.length]}.${(next() % 64).toString(16)}]\r\n`;
    else {
      const n = 3 + (next() % 9);
      const words: string[] = [];
      for (let k = 0; k < n; k++) words.push(WORDS[next() % WORDS.length]!);
      s = `${words[0]}${line}=${words.slice(1).join(' ')} ${next() % 10_000}\r\n`;
    }
    parts.push(s);
    len += s.length;
    line++;
  }
  return Buffer.from(parts.join(''), 'latin1').subarray(0, size);
}

/** A PE-ish "binary": header, random code, repeated tables, zero padding, text resources. */
export function binaryBytes(seed: number, size: number): Buffer {
  const next = mulberry32(seed);
  const out = Buffer.alloc(size);
  let at = 0;
  const put = (b: Buffer) => {
    const n = Math.min(b.length, size - at);
    b.copy(out, at, 0, n);
    at += n;
  };
  put(Buffer.from('MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00This program cannot be run in DOS mode.\r\r\n$', 'latin1'));
  at = Math.min(size, 512);
  let part = 0;
  while (at < size) {
    const kind = next() % 4;
    const len = Math.min(size - at, 4 * KiB + (next() % (48 * KiB)));
    const s = subSeed(seed, `part${part++}`);
    if (kind === 0 || kind === 1) put(randomBytes(s, len));
    else if (kind === 2) put(textBytes(s, len));
    else {
      // A relocation-like table: small records with slowly changing fields, then zeros.
      const rec = Buffer.alloc(len);
      for (let i = 0; i + 8 <= len / 2; i += 8) {
        rec.writeUInt32LE(0x1000 + i * 3, i);
        rec.writeUInt32LE(next() % 256, i + 4);
      }
      put(rec);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// File sets

export interface FixtureFile {
  /** Path in the FAT filesystem, '/'-separated, 8.3 upper-case names, no leading slash. */
  path: string;
  content: Buffer;
}

export interface BaseImageOptions {
  /** PRNG seed (default 98). */
  seed?: number;
  /** qcow2 cluster size (default 64 KiB). */
  clusterSize?: number;
  /** Virtual disk size in MiB (default 64). */
  sizeMiB?: number;
  /** File name without extension (default "base"). */
  name?: string;
  /** Multiplies the amount of file data (default 1, about 12 MiB). */
  scale?: number;
}

/** The files of the base image: a miniature Windows 98 install. */
export function baseFiles(seed = 98, scale = 1): FixtureFile[] {
  const files: FixtureFile[] = [];
  const sz = (n: number) => Math.max(1, Math.round(n * scale));
  const rnd = mulberry32(subSeed(seed, 'sizes'));
  const add = (path: string, kind: 'random' | 'text' | 'binary' | 'zero', size: number) => {
    const s = subSeed(seed, path);
    const content =
      kind === 'random' ? randomBytes(s, size) : kind === 'text' ? textBytes(s, size) : kind === 'binary' ? binaryBytes(s, size) : Buffer.alloc(size);
    files.push({ path, content });
  };
  add('IO.SYS', 'binary', 222_390);
  add('MSDOS.SYS', 'text', 1_676);
  add('COMMAND.COM', 'binary', 93_890);
  add('CONFIG.SYS', 'text', 180);
  add('AUTOEXEC.BAT', 'text', 412);
  add('WINDOWS/WIN.INI', 'text', 14_210);
  add('WINDOWS/SYSTEM.INI', 'text', 2_870);
  add('WINDOWS/EXPLORER.EXE', 'binary', sz(204_288));
  add('WINDOWS/REGEDIT.EXE', 'binary', sz(120_320));
  add('WINDOWS/SYSTEM.DAT', 'binary', sz(1_900_000));
  add('WINDOWS/USER.DAT', 'binary', sz(260_000));
  add('WINDOWS/WIN386.SWP', 'zero', sz(3 * MiB));
  const dlls = ['KERNEL32', 'USER32', 'GDI32', 'SHELL32', 'COMCTL32', 'OLE32', 'OLEAUT32', 'ADVAPI32', 'WININET', 'MSVCRT', 'RPCRT4', 'COMDLG32', 'MSHTML', 'URLMON', 'WSOCK32', 'MPR'];
  for (const d of dlls) add(`WINDOWS/SYSTEM/${d}.DLL`, 'binary', sz(32 * KiB + (rnd() % (480 * KiB))));
  for (const v of ['VMM32', 'IOS', 'VFAT', 'VXDLDR']) add(`WINDOWS/SYSTEM/${v}.VXD`, 'binary', sz(16 * KiB + (rnd() % (120 * KiB))));
  for (const f of ['ARIAL', 'TIMES', 'COUR', 'VERDANA', 'TAHOMA']) add(`WINDOWS/FONTS/${f}.TTF`, 'random', sz(60 * KiB + (rnd() % (200 * KiB))));
  for (const h of ['WINDOWS', 'NETWORK', 'PRINTING', 'TOUR', 'TROUBLE', 'MSPAINT']) add(`WINDOWS/HELP/${h}.HLP`, 'text', sz(40 * KiB + (rnd() % (200 * KiB))));
  for (let i = 0; i < 8; i++) add(`WINDOWS/INF/SETUP${i}.INF`, 'text', sz(4 * KiB + (rnd() % (40 * KiB))));
  add('APPS/WORDPAD/WORDPAD.EXE', 'binary', sz(204_800));
  add('APPS/PAINT/MSPAINT.EXE', 'binary', sz(344_064));
  add('APPS/PAINT/SAMPLE.BMP', 'random', sz(230_454));
  add('APPS/GAMES/SOL.EXE', 'binary', sz(180_736));
  add('APPS/GAMES/WINMINE.EXE', 'binary', sz(24_576));
  for (let i = 0; i < 6; i++) add(`MYDOCS/LETTER${i}.TXT`, 'text', sz(2 * KiB + (rnd() % (24 * KiB))));
  add('MYDOCS/PHOTO.JPG', 'random', sz(412_000));
  add('MYDOCS/ZEROS.BIN', 'zero', sz(512 * KiB));
  return files;
}

export interface VariantEdits {
  /** New files, or new content for existing ones. */
  write?: FixtureFile[];
  /** In-place byte patches of existing files (the file is rewritten). */
  patch?: Array<{ path: string; offset: number; bytes: Buffer }>;
  /** Files to delete. */
  remove?: string[];
}

/** A realistic "after some updates" edit set: new files, replaced DLLs, patched INI files, a deletion. */
export function standardVariantEdits(seed = 99): VariantEdits {
  const s = (label: string) => subSeed(seed, label);
  return {
    write: [
      { path: 'WINDOWS/SYSTEM/MSHTML.DLL', content: binaryBytes(s('mshtml-v2'), 512 * KiB) },
      { path: 'WINDOWS/SYSTEM/DIRECTX.DLL', content: binaryBytes(s('directx'), 300 * KiB) },
      { path: 'APPS/IE5/IEXPLORE.EXE', content: binaryBytes(s('iexplore'), 256 * KiB) },
      { path: 'APPS/IE5/README.TXT', content: textBytes(s('ie-readme'), 20 * KiB) },
      { path: 'MYDOCS/NEWDOC.TXT', content: textBytes(s('newdoc'), 9 * KiB) },
    ],
    patch: [
      { path: 'WINDOWS/WIN.INI', offset: 100, bytes: Buffer.from('[snapyard]\r\nupdated=1\r\n', 'latin1') },
      { path: 'WINDOWS/SYSTEM.DAT', offset: 300_000, bytes: randomBytes(s('regpatch'), 4096) },
    ],
    remove: ['APPS/GAMES/WINMINE.EXE'],
  };
}

// ---------------------------------------------------------------------------
// qemu-img helpers

export interface Qcow2Info {
  virtualSize: number;
  clusterSize: number;
  format: string;
  backingFilename?: string;
  fullBackingFilename?: string;
  backingFormat?: string;
  snapshots: Array<{ id: string; name: string }>;
}

export async function qemuInfo(path: string): Promise<Qcow2Info> {
  const { stdout } = await runTool('qemu-img', ['info', '--output=json', '-U', path]);
  const j = JSON.parse(stdout) as Record<string, unknown>;
  const info: Qcow2Info = {
    virtualSize: j['virtual-size'] as number,
    clusterSize: (j['cluster-size'] as number | undefined) ?? 0,
    format: j['format'] as string,
    snapshots: ((j['snapshots'] as Array<{ id: string; name: string }> | undefined) ?? []).map((s) => ({ id: s.id, name: s.name })),
  };
  if (typeof j['backing-filename'] === 'string') info.backingFilename = j['backing-filename'];
  if (typeof j['full-backing-filename'] === 'string') info.fullBackingFilename = j['full-backing-filename'];
  if (typeof j['backing-filename-format'] === 'string') info.backingFormat = j['backing-filename-format'];
  return info;
}

/** `qemu-img compare`: true when the guest-visible contents are identical. */
export async function guestContentEqual(a: string, b: string): Promise<boolean> {
  try {
    await execFileP('qemu-img', ['compare', '-q', a, b]);
    return true;
  } catch (e) {
    const err = e as { code?: string | number; stderr?: string; message: string };
    if (err.code === 1) return false;
    if (err.code === 'ENOENT') throw new Error('qemu-img is not installed (Debian package "qemu-utils": apt-get install qemu-utils)');
    throw new Error(`qemu-img compare ${a} ${b} failed (exit ${String(err.code)}): ${err.stderr ?? err.message}`);
  }
}

async function toRaw(src: string, raw: string): Promise<void> {
  await runTool('qemu-img', ['convert', '-O', 'raw', src, raw]);
}

async function toQcow2(raw: string, out: string, clusterSize: number, extra: string[] = []): Promise<void> {
  await runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, ...extra, raw, out]);
}

// ---------------------------------------------------------------------------
// FAT filesystem helpers (mtools)

const fatPath = (p: string) => `::/${p}`;

function parentDirs(paths: string[]): string[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  // Sorted, so every parent comes before its children.
  return [...dirs].sort();
}

/** Creates missing directories (ignoring ones that exist) and copies `files` in, in sorted order, overwriting. */
async function writeFatFiles(raw: string, files: FixtureFile[], stage: string, existingDirs: Set<string>): Promise<void> {
  const dirs = parentDirs(files.map((f) => f.path)).filter((d) => !existingDirs.has(d));
  if (dirs.length > 0) await runTool('mmd', ['-i', raw, ...dirs.map(fatPath)]);
  for (const d of dirs) existingDirs.add(d);
  // One mcopy per target directory, files in sorted order.
  const byDir = new Map<string, FixtureFile[]>();
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    const d = dirname(f.path) === '.' ? '' : dirname(f.path);
    const list = byDir.get(d) ?? [];
    list.push(f);
    byDir.set(d, list);
  }
  let n = 0;
  for (const [d, list] of byDir) {
    const sdir = join(stage, String(n++));
    await mkdir(sdir, { recursive: true });
    const srcs: string[] = [];
    for (const f of list) {
      const p = join(sdir, basename(f.path));
      await writeFile(p, f.content);
      srcs.push(p);
    }
    await runTool('mcopy', ['-i', raw, '-D', 'o', ...srcs, d === '' ? '::/' : `${fatPath(d)}/`]);
  }
}

async function readFatFile(raw: string, path: string, stage: string): Promise<Buffer> {
  const out = join(stage, `read-${createHash('sha256').update(path).digest('hex').slice(0, 12)}`);
  await runTool('mcopy', ['-i', raw, '-n', fatPath(path), out]);
  const b = await readFile(out);
  await rm(out, { force: true });
  return b;
}

/** Lists every directory path of the FAT image (for mmd to skip). */
async function fatDirs(raw: string): Promise<Set<string>> {
  // `mdir -/ -b` prints every entry recursively, one full path a line; directories end with '/'.
  const { stdout } = await runTool('mdir', ['-i', raw, '-/', '-b', '::/']);
  const dirs = new Set<string>();
  for (const line of stdout.split('\n')) {
    const m = /^::\/(.+)\/$/.exec(line.trim());
    if (m) dirs.add(m[1]!);
  }
  return dirs;
}

// ---------------------------------------------------------------------------
// Builders

async function scratch(dir: string, label: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  return mkdtemp(join(dir, `.tmp-${label}-`));
}

/**
 * A `sizeMiB` (64) MiB qcow2 holding a FAT16 filesystem with the files of
 * baseFiles(seed). Returns the path (`<dir>/<name>.qcow2`).
 */
export async function makeBaseImage(dir: string, opts: BaseImageOptions = {}): Promise<string> {
  const seed = opts.seed ?? 98;
  const clusterSize = opts.clusterSize ?? 64 * KiB;
  const sizeMiB = opts.sizeMiB ?? 64;
  const out = join(dir, `${opts.name ?? 'base'}.qcow2`);
  const tmp = await scratch(dir, 'base');
  try {
    const raw = join(tmp, 'disk.raw');
    const fh = await open(raw, 'w');
    await fh.truncate(sizeMiB * MiB);
    await fh.close();
    const sectors = (sizeMiB * MiB) / 512;
    // 2 KiB FAT clusters (what Windows 98 picks for a 64 MiB FAT16 volume), fixed serial and label.
    await runTool('mformat', ['-i', raw, '-T', String(sectors), '-h', '16', '-s', '63', '-c', '4', '-N', (seed >>> 0).toString(16).padStart(8, '0').slice(-8), '-v', 'WIN98', '::']);
    await writeFatFiles(raw, baseFiles(seed, opts.scale ?? 1), join(tmp, 'stage'), new Set());
    await toQcow2(raw, out, clusterSize);
    return out;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * A full (not overlay) image: the base's filesystem with `edits` applied.
 * Keeps the base's cluster size. Returns `<dir>/<name>.qcow2`.
 */
export async function makeVariant(dir: string, basePath: string, name: string, edits: VariantEdits = standardVariantEdits()): Promise<string> {
  const out = join(dir, `${name}.qcow2`);
  const tmp = await scratch(dir, name);
  try {
    const { clusterSize } = await qemuInfo(basePath);
    const raw = join(tmp, 'disk.raw');
    await toRaw(basePath, raw);
    const stage = join(tmp, 'stage');
    await mkdir(stage, { recursive: true });
    for (const p of edits.remove ?? []) await runTool('mdel', ['-i', raw, fatPath(p)]);
    const writes: FixtureFile[] = [...(edits.write ?? [])];
    for (const pt of edits.patch ?? []) {
      const cur = await readFatFile(raw, pt.path, stage);
      const end = Math.max(cur.length, pt.offset + pt.bytes.length);
      const next = Buffer.alloc(end);
      cur.copy(next);
      pt.bytes.copy(next, pt.offset);
      writes.push({ path: pt.path, content: next });
    }
    if (writes.length > 0) await writeFatFiles(raw, writes, stage, await fatDirs(raw));
    await toQcow2(raw, out, clusterSize);
    return out;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** qemu-io commands of the default overlay: patterned, random, zeroed and partial-cluster writes. */
export const DEFAULT_OVERLAY_WRITES = ['write -P 0xab 1M 256k', 'write -P 0xcd 20M 64k', 'write -z 8M 128k', 'write -P 0x5a 40000k 3k'];

/**
 * A qcow2 overlay backed by `basePath` (relative backing path when both are in
 * the same directory), with `writes` (qemu-io commands) applied plus 192 KiB of
 * seeded random data at 33 MiB. Returns `<dir>/<name>.qcow2`.
 */
export async function makeOverlay(dir: string, basePath: string, name: string, writes: string[] = DEFAULT_OVERLAY_WRITES, seed = 7): Promise<string> {
  const out = join(dir, `${name}.qcow2`);
  const tmp = await scratch(dir, name);
  try {
    const { clusterSize } = await qemuInfo(basePath);
    const backing = relative(dirname(resolve(out)), resolve(basePath));
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize}`, '-b', backing, '-F', 'qcow2', out]);
    const pattern = join(tmp, 'random.bin');
    await writeFile(pattern, randomBytes(seed, 192 * KiB));
    const cmds = [...writes, `write -s ${pattern} 33M 192k`];
    await runTool('qemu-io', ['-f', 'qcow2', '-t', 'unsafe', ...cmds.flatMap((c) => ['-c', c.startsWith('write') ? c.replace(/^write /, 'write -q ') : c]), out]);
    return out;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/**
 * Same guest content as `srcPath`, different host layout: the source's
 * non-zero clusters are written one by one, in a seeded random order, into an
 * empty qcow2 (so they land at different host offsets). Checks both
 * properties before returning `<dir>/<name>.qcow2` (default "<src>-shuffled").
 */
export async function makeShuffled(dir: string, srcPath: string, opts: { seed?: number; name?: string } = {}): Promise<string> {
  const name = opts.name ?? `${basename(srcPath, '.qcow2')}-shuffled`;
  const out = join(dir, `${name}.qcow2`);
  const tmp = await scratch(dir, name);
  try {
    const info = await qemuInfo(srcPath);
    const cs = info.clusterSize || 64 * KiB;
    const raw = join(tmp, 'disk.raw');
    await toRaw(srcPath, raw);
    // Candidate clusters: what the source maps as data (read through any backing chain) ...
    const { stdout } = await runTool('qemu-img', ['map', '--output=json', srcPath]);
    const extents = (JSON.parse(stdout) as Array<{ start: number; length: number; data: boolean }>).filter((e) => e.data);
    const candidates = new Set<number>();
    for (const e of extents) {
      for (let off = Math.floor(e.start / cs) * cs; off < e.start + e.length; off += cs) candidates.add(off);
    }
    // ... minus the ones whose guest bytes are all zero.
    const fh = await open(raw, 'r');
    const clusters = new Map<number, Buffer>();
    const zero = Buffer.alloc(cs);
    try {
      for (const off of [...candidates].sort((a, b) => a - b)) {
        const len = Math.min(cs, info.virtualSize - off);
        const buf = Buffer.alloc(len);
        await fh.read(buf, 0, len, off);
        if (!buf.equals(zero.subarray(0, len))) clusters.set(off, buf);
      }
    } finally {
      await fh.close();
    }
    const offsets = [...clusters.keys()];
    const next = mulberry32(opts.seed ?? 1234);
    for (let i = offsets.length - 1; i > 0; i--) {
      const j = next() % (i + 1);
      [offsets[i], offsets[j]] = [offsets[j]!, offsets[i]!];
    }
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${cs}`, out, String(info.virtualSize)]);
    const cmds: string[] = [];
    for (const off of offsets) {
      const buf = clusters.get(off)!;
      const p = join(tmp, `c${off}`);
      await writeFile(p, buf);
      cmds.push('-c', `write -q -s ${p} ${off} ${buf.length}`);
    }
    // Batches keep the command line short.
    for (let i = 0; i < cmds.length; i += 400) await runTool('qemu-io', ['-f', 'qcow2', '-t', 'unsafe', ...cmds.slice(i, i + 400), out]);
    if (!(await guestContentEqual(srcPath, out))) throw new Error(`makeShuffled: ${out} does not have the guest content of ${srcPath}`);
    if ((await readFile(out)).equals(await readFile(srcPath))) throw new Error(`makeShuffled: ${out} is byte-identical to ${srcPath}`);
    return out;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** `qemu-img convert -c`: zlib-compressed clusters, same cluster size. Returns `<dir>/<src>-compressed.qcow2`. */
export async function makeCompressed(dir: string, srcPath: string, name = `${basename(srcPath, '.qcow2')}-compressed`): Promise<string> {
  const out = join(dir, `${name}.qcow2`);
  const { clusterSize } = await qemuInfo(srcPath);
  await runTool('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, srcPath, out]);
  return out;
}

/**
 * A copy of `srcPath` with an internal snapshot "snap1" taken, then some
 * writes on top (so the active layer and snap1 differ). The snapshot's
 * wall-clock date is set to FIXTURE_EPOCH so the bytes are deterministic.
 * Returns `<dir>/<src>-snap.qcow2`.
 */
export async function makeWithInternalSnapshot(dir: string, srcPath: string, name = `${basename(srcPath, '.qcow2')}-snap`): Promise<string> {
  const out = join(dir, `${name}.qcow2`);
  await copyFile(srcPath, out);
  await runTool('qemu-img', ['snapshot', '-c', 'snap1', out]);
  await fixSnapshotDates(out, FIXTURE_EPOCH);
  await runTool('qemu-io', ['-f', 'qcow2', '-t', 'unsafe', '-c', 'write -q -P 0x42 2M 128k', '-c', 'write -q -P 0x17 50M 64k', '-c', 'write -q -z 4M 64k', out]);
  return out;
}

/** Overwrites date_sec/date_nsec of every internal snapshot in a qcow2 file (offline). */
async function fixSnapshotDates(path: string, epoch: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    const hdr = Buffer.alloc(72);
    await fh.read(hdr, 0, 72, 0);
    if (hdr.readUInt32BE(0) !== 0x514649fb) throw new Error(`${path} is not a qcow2 file`);
    const count = hdr.readUInt32BE(60);
    let off = Number(hdr.readBigUInt64BE(64));
    for (let i = 0; i < count; i++) {
      const e = Buffer.alloc(40);
      await fh.read(e, 0, 40, off);
      const idLen = e.readUInt16BE(12);
      const nameLen = e.readUInt16BE(14);
      const extra = e.readUInt32BE(36);
      const d = Buffer.alloc(8);
      d.writeUInt32BE(epoch, 0);
      d.writeUInt32BE(0, 4);
      await fh.write(d, 0, 8, off + 16);
      const len = 40 + extra + idLen + nameLen;
      off += (len + 7) & ~7;
    }
  } finally {
    await fh.close();
  }
}

export interface FixtureSet {
  dir: string;
  base: string;
  variant: string;
  overlay: string;
  shuffled: string;
  compressed: string;
  snapshot: string;
}

/** Every fixture, built in `dir`. */
export async function makeAllFixtures(dir: string, opts: BaseImageOptions = {}): Promise<FixtureSet> {
  const base = await makeBaseImage(dir, opts);
  const [variant, overlay, shuffled, compressed, snapshot] = await Promise.all([
    makeVariant(dir, base, 'variant'),
    makeOverlay(dir, base, 'overlay'),
    makeShuffled(dir, base),
    makeCompressed(dir, base),
    makeWithInternalSnapshot(dir, base),
  ]);
  return { dir, base, variant, overlay, shuffled, compressed, snapshot };
}

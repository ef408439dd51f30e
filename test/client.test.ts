/**
 * `snapyard push` and `snapyard pull` end to end: the CLI (bin/snapyard.js,
 * compiled dist/) as a child process against a real registry on a loopback
 * port, with real qcow2 images made by the fixture helpers:
 *
 *   base        a FAT disk with files (makeBaseImage)
 *   v1          base + added/replaced/patched/deleted files (a full image)
 *   v2          v1 + a few more edits
 *   shuffled    v1's guest content, another host layout
 *   compressed  v1 with zlib-compressed clusters
 *   snap        v1 with an internal snapshot and writes on top
 *   overlay     a qemu-made overlay backed by base
 *   big         48 MiB of random data (for the interrupted pull)
 *
 * Pushed blobs must GET back byte-exact through plain OCI; full pulls must
 * be byte-exact; overlay pulls must be clean qcow2 overlays with the target's
 * guest content; what a pull reports (and estimates with --dry-run) must
 * match what it does; a killed pull must resume from the cache.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  binaryBytes,
  guestContentEqual,
  makeBaseImage,
  makeCompressed,
  makeOverlay,
  makeShuffled,
  makeVariant,
  makeWithInternalSnapshot,
  qemuInfo,
  randomBytes,
  runTool,
  subSeed,
  textBytes,
} from './helpers/qcow2-fixtures.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const BIN = resolve(import.meta.dirname, '..', 'bin', 'snapyard.js');
const execFileP = promisify(execFile);
const newDir = tempDirs('snapyard-client-');
const KiB = 1024;
const MiB = 1024 * KiB;
const REPO = 'client/win98';

interface PushJson {
  ref: string;
  manifestDigest: string;
  blobDigest: string;
  size: number;
  layout: 'qcow2' | 'bytes';
  chunks: number;
  newChunks: number;
  newRawBytes: number;
  uploadBytes: number;
  base: { blob: string; manifest: string | null; backingFile: string } | null;
  seconds: number;
}

interface PullJson {
  ref: string;
  manifestDigest: string;
  blobDigest: string;
  output: string | null;
  mode: 'full' | 'overlay';
  dryRun: boolean;
  bytesDownloaded: number;
  bytesToDownload?: number;
  bytesFromBase: number;
  bytesInPlace: number;
  bytesFromCache: number;
  chunks: { total: number; fromBase: number; inPlace: number; fromCache: number; downloaded: number };
  seconds: number;
}

let s: TestServer;
let dir: string;
let outDir: string;
let pushCache: string;
const img = { base: '', v1: '', v2: '', shuffled: '', compressed: '', snap: '', overlay: '', big: '' };
const pushed = new Map<string, PushJson>();

/** The test's environment without the CLI's defaults (every call passes --registry and --cache). */
const CLI_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SNAPYARD_REGISTRY' && k !== 'SNAPYARD_CACHE'));

/** Runs the CLI; rejects (with code, stdout, stderr) on a non-zero exit. */
function cli(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP(process.execPath, [BIN, ...args], { maxBuffer: 16 * MiB, env: CLI_ENV });
}

function oneJson<T>(stdout: string): T {
  const lines = stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as T;
}

async function push(tag: string, file: string, extra: string[] = []): Promise<PushJson> {
  const { stdout } = await cli(['push', `${REPO}:${tag}`, file, '--json', '--registry', s.url, '--cache', pushCache, ...extra]);
  const r = oneJson<PushJson>(stdout);
  pushed.set(tag, r);
  return r;
}

async function pull(tag: string, args: string[]): Promise<PullJson> {
  const { stdout } = await cli(['pull', `${REPO}:${tag}`, ...args, '--json', '--registry', s.url]);
  return oneJson<PullJson>(stdout);
}

function sha256File(path: string): string {
  return `sha256:${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
}

async function getBlob(digest: string): Promise<Buffer> {
  const r = await fetch(`${s.url}/v2/${REPO}/blobs/${digest}`);
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

async function serverIndexKind(digest: string): Promise<number> {
  const rec = await s.store.meta.getBlob(digest as `sha256:${string}`);
  expect(rec, `blob ${digest} is in the store`).not.toBeNull();
  return (await s.store.blobs.index(rec!)).kind;
}

/** Total size of the files in a directory (0 if it does not exist yet). */
function dirBytes(d: string): number {
  let n = 0;
  try {
    for (const f of readdirSync(d)) n += statSync(join(d, f)).size;
  } catch {
    /* not created yet */
  }
  return n;
}

/** |estimate - actual| within 10% + 64 KiB, and the estimate not below actual by more than that. */
function expectEstimate(estimate: number, actual: number): void {
  const tol = 0.1 * actual + 64 * KiB;
  expect(estimate).toBeGreaterThanOrEqual(actual - tol);
  expect(Math.abs(estimate - actual)).toBeLessThanOrEqual(tol);
}

beforeAll(async () => {
  s = await startTestServer();
  dir = newDir();
  outDir = join(dir, 'out');
  mkdirSync(outDir);
  pushCache = join(dir, 'push-cache');
  img.base = await makeBaseImage(dir);
  img.v1 = await makeVariant(dir, img.base, 'v1');
  const s2 = (label: string) => subSeed(2, label);
  [img.v2, img.shuffled, img.compressed, img.snap, img.overlay] = await Promise.all([
    makeVariant(dir, img.v1, 'v2', {
      write: [
        { path: 'APPS/IE5/HOTFIX.DLL', content: binaryBytes(s2('hotfix'), 96 * KiB) },
        { path: 'MYDOCS/TODO.TXT', content: textBytes(s2('todo'), 3 * KiB) },
      ],
      patch: [
        { path: 'WINDOWS/SYSTEM.INI', offset: 40, bytes: Buffer.from('[v2]\r\nshell=explorer.exe\r\n', 'latin1') },
        { path: 'WINDOWS/USER.DAT', offset: 100_000, bytes: randomBytes(s2('userdat'), 2048) },
      ],
      remove: ['MYDOCS/LETTER3.TXT'],
    }),
    makeShuffled(dir, img.v1),
    makeCompressed(dir, img.v1),
    makeWithInternalSnapshot(dir, img.v1),
    makeOverlay(dir, img.base, 'overlay'),
  ]);
  // 48 MiB of random guest data in a 64 MiB disk: big enough that a pull takes several batches.
  img.big = join(dir, 'big.qcow2');
  const rnd = join(dir, 'big.rnd');
  writeFileSync(rnd, randomBytes(4242, 48 * MiB));
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', img.big, '64M']);
  await runTool('qemu-io', ['-f', 'qcow2', '-t', 'unsafe', '-c', `write -q -s ${rnd} 0 48M`, img.big]);
});

afterAll(async () => {
  await s?.stop();
});

describe('snapyard push', () => {
  test('base, v1 and v2 (--json): qcow2 layout, guest-view index on the server, OCI GET byte-identical to the file', async () => {
    for (const tag of ['base', 'v1', 'v2'] as const) {
      const file = img[tag];
      const r = await push(tag, file);
      const size = statSync(file).size;
      expect(r).toMatchObject({ ref: `${REPO}:${tag}`, layout: 'qcow2', size, blobDigest: sha256File(file), base: null });
      expect(r.manifestDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(r.chunks).toBeGreaterThan(10);
      expect(await serverIndexKind(r.blobDigest)).toBe(1);
      // The manifest names the blob; the blob is the exact file.
      const m = await fetch(`${s.url}/v2/${REPO}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
      expect(m.status).toBe(200);
      expect(m.headers.get('docker-content-digest')).toBe(r.manifestDigest);
      const doc = (await m.json()) as { layers: Array<{ digest: string; size: number; mediaType: string }> };
      expect(doc.layers).toEqual([expect.objectContaining({ digest: r.blobDigest, size, mediaType: 'application/vnd.snapyard.qcow2.v1' })]);
      const got = await getBlob(r.blobDigest);
      expect(got.byteLength).toBe(size);
      expect(got.equals(readFileSync(file))).toBe(true);
    }
    // The first push had nothing to dedup against: every byte was new.
    expect(pushed.get('base')!.newRawBytes).toBeGreaterThan(pushed.get('base')!.size * 0.9);
  });

  test('v2 after v1 uploads far fewer raw bytes than the image; pushing it again uploads nothing', async () => {
    const v1 = pushed.get('v1')!;
    const v2 = pushed.get('v2')!;
    expect(v2.newRawBytes).toBeGreaterThan(0);
    expect(v2.newRawBytes).toBeLessThan(v2.size / 10);
    expect(v2.newChunks).toBeLessThan(v2.chunks / 5);
    expect(v2.uploadBytes).toBeLessThan(v2.size / 10);
    // v1 after base shares most of base's files too.
    expect(v1.newRawBytes).toBeLessThan(v1.size / 3);
    const again = await push('v2-again', img.v2);
    expect(again).toMatchObject({ blobDigest: v2.blobDigest, newChunks: 0, newRawBytes: 0 });
    expect(again.uploadBytes).toBeLessThan(16 * KiB); // the compact index only
  });

  test('a shuffled host layout of v1 grows the store by less than 1 MiB, and GETs byte-exact', async () => {
    const before = await s.store.chunks.stats();
    const r = await push('v1-shuffled', img.shuffled);
    const after = await s.store.chunks.stats();
    expect(r.layout).toBe('qcow2');
    expect(r.blobDigest).not.toBe(pushed.get('v1')!.blobDigest);
    expect(after.stored - before.stored).toBeLessThan(1 * MiB);
    expect(after.raw - before.raw).toBeLessThan(1 * MiB);
    expect(r.newRawBytes).toBeLessThan(1 * MiB);
    expect((await getBlob(r.blobDigest)).equals(readFileSync(img.shuffled))).toBe(true);
  });

  test('an overlay records its base: OCI subject = the base manifest, annotations name the backing blob and file', async () => {
    const r = await push('overlay', img.overlay);
    const base = pushed.get('base')!;
    expect(r.layout).toBe('qcow2');
    expect(r.base).toEqual({ blob: base.blobDigest, manifest: base.manifestDigest, backingFile: 'base.qcow2' });
    expect(r.size).toBeLessThan(2 * MiB);
    const m = await fetch(`${s.url}/v2/${REPO}/manifests/overlay`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const doc = (await m.json()) as { subject?: { digest: string }; annotations?: Record<string, string> };
    expect(doc.subject?.digest).toBe(base.manifestDigest);
    expect(doc.annotations).toMatchObject({ 'io.snapyard.base.blob': base.blobDigest, 'io.snapyard.backing-file': 'base.qcow2' });
    expect((await getBlob(r.blobDigest)).equals(readFileSync(img.overlay))).toBe(true);
  });
});

describe('snapyard pull (full image)', () => {
  test('push the compressed and the internal-snapshot images (guest data shared with v1)', async () => {
    const c = await push('v1-compressed', img.compressed);
    const sn = await push('v1-snap', img.snap);
    for (const r of [c, sn]) {
      expect(r.layout).toBe('qcow2');
      expect(await serverIndexKind(r.blobDigest)).toBe(1);
    }
    // The snapshot image differs from v1 by a few writes and the snapshot table.
    expect(sn.newRawBytes).toBeLessThan(sn.size / 4);
  });

  test('v1, the compressed image, the internal-snapshot image and the overlay, each with an empty cache: byte-identical', async () => {
    for (const [tag, file] of [['v1', img.v1], ['v1-compressed', img.compressed], ['v1-snap', img.snap], ['overlay', img.overlay]] as const) {
      const out = join(outDir, `full-${tag}.qcow2`);
      const r = await pull(tag, ['-o', out, '--cache', join(dir, `cache-full-${tag}`)]);
      expect(r).toMatchObject({ mode: 'full', dryRun: false, bytesFromBase: 0, bytesFromCache: 0, blobDigest: pushed.get(tag)!.blobDigest });
      expect(r.chunks.fromCache).toBe(0);
      expect(r.chunks.fromBase).toBe(0);
      expect(r.chunks.downloaded).toBe(r.chunks.total);
      expect(r.bytesDownloaded).toBeGreaterThan(0);
      expect(sha256File(out), tag).toBe(sha256File(file));
      expect(existsSync(`${out}.snapyard-part`)).toBe(false);
      // Only the chunks the file is made of (not the guest data a compressed image's clusters decompress to).
      const idx = await s.store.blobs.index((await s.store.meta.getBlob(r.blobDigest as `sha256:${string}`))!);
      expect(r.chunks.total, tag).toBe(new Set([...idx.blobPieces(0, idx.size)].map((p) => p.list.rawDigestAt(p.i).toString('hex'))).size);
    }
  });
});

test('in-place data: pulling v2 over a file that holds v1 reuses it and downloads only the difference', async () => {
  const out = join(outDir, 'inplace.qcow2');
  copyFileSync(img.v1, out);
  const fresh = await pull('v2', ['-o', join(outDir, 'fresh-v2.qcow2'), '--cache', join(dir, 'cache-fresh-v2')]);
  const r = await pull('v2', ['-o', out, '--cache', join(dir, 'cache-inplace')]);
  expect(r.chunks.inPlace).toBeGreaterThan(r.chunks.total / 2);
  expect(r.bytesInPlace).toBeGreaterThan(0);
  expect(r.bytesDownloaded).toBeLessThan(fresh.bytesDownloaded / 4);
  expect(sha256File(out)).toBe(sha256File(img.v2));
});

describe('snapyard pull --overlay', () => {
  let cache: string;
  let v1Pull: PullJson;

  test('v1 over base: --dry-run prints an estimate and writes nothing; the pull makes a clean overlay with v1 guest content', async () => {
    cache = join(dir, 'cache-overlay');
    // Next to the base: the overlay names its backing file relatively.
    const out = join(dir, 'v1-overlay.qcow2');
    const dry = await cli(['pull', `${REPO}:v1`, '-o', out, '--base', img.base, '--overlay', '--cache', cache, '--dry-run', '--registry', s.url]);
    const m = /would download (\d+) bytes/.exec(dry.stdout);
    expect(m, dry.stdout).not.toBeNull();
    const estimate = Number(m![1]);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.snapyard-part`)).toBe(false);

    v1Pull = await pull('v1', ['-o', out, '--base', img.base, '--overlay', '--cache', cache]);
    expect(v1Pull).toMatchObject({ mode: 'overlay', dryRun: false, bytesFromCache: 0 });
    expect(v1Pull.bytesFromBase).toBeGreaterThan(0);
    expect(v1Pull.chunks.fromBase).toBeGreaterThan(0);
    expect(v1Pull.bytesDownloaded).toBeGreaterThan(0);
    // Only what differs from base crossed the network.
    expect(v1Pull.bytesDownloaded).toBeLessThan(statSync(img.v1).size / 4);
    expectEstimate(estimate, v1Pull.bytesDownloaded);

    const check = await runTool('qemu-img', ['check', out]);
    expect(check.stdout).toContain('No errors were found');
    expect(await guestContentEqual(out, img.v1)).toBe(true);
    expect(await guestContentEqual(out, img.base)).toBe(false);
    const info = await qemuInfo(out);
    expect(info.format).toBe('qcow2');
    expect(info.backingFilename).toBe('base.qcow2');
    expect(resolve(info.fullBackingFilename!)).toBe(resolve(img.base));
    expect(info.virtualSize).toBe((await qemuInfo(img.v1)).virtualSize);
    expect(statSync(out).size).toBeLessThan(statSync(img.v1).size / 2);
  });

  test('v2 over base with the cache holding v1: downloads less than v1 did, reuses the cache; --dry-run --json estimates it', async () => {
    // In another directory (not below the base's): the overlay names its backing file absolutely.
    const out = join(outDir, 'v2-overlay.qcow2');
    const dry = await pull('v2', ['-o', out, '--base', img.base, '--overlay', '--cache', cache, '--dry-run']);
    expect(dry).toMatchObject({ dryRun: true, output: null, bytesDownloaded: 0 });
    expect(typeof dry.bytesToDownload).toBe('number');
    expect(existsSync(out)).toBe(false);

    const r = await pull('v2', ['-o', out, '--base', img.base, '--overlay', '--cache', cache]);
    expect(r.mode).toBe('overlay');
    expect(r.bytesFromCache).toBeGreaterThan(0);
    expect(r.chunks.fromCache).toBeGreaterThan(0);
    expect(r.bytesDownloaded).toBeGreaterThan(0);
    expect(r.bytesDownloaded).toBeLessThan(v1Pull.bytesDownloaded);
    expectEstimate(dry.bytesToDownload!, r.bytesDownloaded);
    expect(dry.chunks).toEqual(r.chunks);

    const check = await runTool('qemu-img', ['check', out]);
    expect(check.stdout).toContain('No errors were found');
    expect(await guestContentEqual(out, img.v2)).toBe(true);
    expect(await guestContentEqual(out, img.v1)).toBe(false);
    expect((await qemuInfo(out)).backingFilename).toBe(resolve(img.base));
  });
});

test('an overlay for a target larger than the base (disk grown by 64 MiB, data written past the old end) is clean and identical', async () => {
  const grown = join(dir, 'v1-grown.qcow2');
  copyFileSync(img.v1, grown);
  await runTool('qemu-img', ['resize', '-q', grown, '+64M']);
  const size = (await qemuInfo(grown)).virtualSize;
  await runTool('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${size - 4 * MiB} 1M`, grown]);
  await push('v1-grown', grown);
  const out = join(outDir, 'grown-overlay.qcow2');
  await pull('v1-grown', ['-o', out, '--base', img.base, '--overlay', '--cache', join(dir, 'cache-grown')]);
  expect((await runTool('qemu-img', ['check', out])).stdout).toContain('No errors were found');
  expect((await runTool('qemu-img', ['compare', out, grown])).stdout).toContain('Images are identical');
});

describe('interrupted pull', () => {
  test('a pull killed (SIGKILL) after its first batches resumes from the cache: downloads strictly less, output byte-exact', async () => {
    const p = await push('big', img.big, ['--level', '1']);
    expect(p.layout).toBe('qcow2');
    const cache = join(dir, 'cache-killed');
    const out = join(outDir, 'big.qcow2');
    // What a pull with an empty cache downloads.
    const full = await pull('big', ['-o', out, '--cache', join(dir, 'cache-dry-big'), '--dry-run']);
    expect(full.bytesToDownload).toBeGreaterThan(40 * MiB);

    // One batch (8 MiB raw) at a time: once the cache's packs hold more than one batch, the first
    // batch was flushed (a batch starts only after the previous one is flushed). Kill right then.
    const packs = join(cache, 'chunks', 'packs');
    const child = spawn(process.execPath, [BIN, 'pull', `${REPO}:big`, '-o', out, '--cache', cache, '--concurrency', '1', '--json', '--registry', s.url], { stdio: ['ignore', 'pipe', 'pipe'], env: CLI_ENV });
    let exited = false;
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
      child.on('exit', (code, signal) => {
        exited = true;
        res({ code, signal });
      }),
    );
    let seen = 0;
    const deadline = Date.now() + 50_000;
    while (!exited && Date.now() < deadline) {
      seen = dirBytes(packs);
      if (seen > 10 * MiB) {
        child.kill('SIGKILL');
        break;
      }
      await new Promise((r) => setTimeout(r, 2));
    }
    const { signal } = await exit;
    expect(signal, `the pull must still be running when the cache holds ${seen} bytes`).toBe('SIGKILL');
    expect(existsSync(out)).toBe(false);

    const r = await pull('big', ['-o', out, '--cache', cache]);
    expect(r.chunks.fromCache).toBeGreaterThan(0);
    expect(r.bytesFromCache).toBeGreaterThanOrEqual(8 * MiB - 256 * KiB);
    expect(r.bytesDownloaded).toBeLessThan(full.bytesToDownload!);
    expect(r.bytesDownloaded + r.bytesFromCache).toBeGreaterThan(40 * MiB);
    expect(r.chunks.fromCache + r.chunks.downloaded).toBe(r.chunks.total);
    expect(sha256File(out)).toBe(sha256File(img.big));

    // And a third pull has it all in the cache.
    const again = await pull('big', ['-o', join(outDir, 'big-again.qcow2'), '--cache', cache]);
    expect(again.chunks.downloaded).toBe(0);
    expect(again.bytesDownloaded).toBeLessThan(64 * KiB); // the index only
    expect(sha256File(join(outDir, 'big-again.qcow2'))).toBe(sha256File(img.big));
  });
});

describe('a qcow2 image the reader refuses', () => {
  test('is pushed as bytes, stored byte-chunked, pulled back byte-exact; --overlay refuses it clearly', async () => {
    // The overlay with L2 entry 0 pointing far past the end of the file.
    const b = readFileSync(img.overlay);
    const l1 = Number(b.readBigUInt64BE(40));
    const l2 = Number(b.readBigUInt64BE(l1) & 0x00ff_ffff_ffff_fe00n);
    expect(l2).toBeGreaterThan(0);
    b.writeBigUInt64BE((1n << 40n) | (1n << 63n), l2);
    const bad = join(dir, 'bad.qcow2');
    writeFileSync(bad, b);
    const r = await push('bad', bad);
    expect(r).toMatchObject({ layout: 'bytes', size: b.byteLength, blobDigest: sha256File(bad), base: null });
    expect(await serverIndexKind(r.blobDigest)).toBe(0);
    expect((await getBlob(r.blobDigest)).equals(b)).toBe(true);
    const out = join(outDir, 'bad.qcow2');
    const p = await pull('bad', ['-o', out, '--cache', join(dir, 'cache-bad')]);
    expect(p.chunks.downloaded).toBe(p.chunks.total);
    expect(sha256File(out)).toBe(r.blobDigest);
    await expect(cli(['pull', `${REPO}:bad`, '-o', join(outDir, 'bad-ov.qcow2'), '--base', img.base, '--overlay', '--cache', join(dir, 'cache-bad'), '--registry', s.url])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/INVALID_ARGUMENT: the target is not a qcow2 image the registry understands/),
    });
    expect(existsSync(join(outDir, 'bad-ov.qcow2'))).toBe(false);
  });
});

describe('errors', () => {
  test('pulling an unknown tag exits non-zero with a clear message and writes nothing', async () => {
    const out = join(outDir, 'nope.qcow2');
    await expect(cli(['pull', `${REPO}:no-such-tag`, '-o', out, '--cache', join(dir, 'cache-err'), '--registry', s.url])).rejects.toMatchObject({
      code: 2,
      stdout: '',
      stderr: expect.stringMatching(/^snapyard: .*MANIFEST_UNKNOWN.*no-such-tag/),
    });
    expect(existsSync(out)).toBe(false);
    await expect(cli(['pull', 'client/no-such-repo:v1', '-o', out, '--cache', join(dir, 'cache-err'), '--registry', s.url])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/^snapyard: .*(MANIFEST_UNKNOWN|NAME_UNKNOWN)/),
    });
  });

  test('pushing to an invalid ref exits non-zero and publishes nothing', async () => {
    for (const ref of ['Client/Win98:v1', 'client/win98', 'client/win98:bad tag', `client/win98@sha256:${'a'.repeat(64)}`, ':v1']) {
      await expect(cli(['push', ref, img.v1, '--registry', s.url, '--cache', pushCache]), ref).rejects.toMatchObject({
        code: 2,
        stderr: expect.stringMatching(/^snapyard: INVALID_ARGUMENT: /),
      });
    }
    const tags = (await (await fetch(`${s.url}/v2/${REPO}/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags.every((t) => /^[a-z0-9-]+$/.test(t))).toBe(true);
  });

  test('--overlay without --base, and an unreachable registry, are clear errors', async () => {
    await expect(cli(['pull', `${REPO}:v1`, '-o', join(outDir, 'x.qcow2'), '--overlay', '--cache', join(dir, 'cache-err'), '--registry', s.url])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/INVALID_ARGUMENT: --overlay needs --base/),
    });
    await expect(cli(['pull', `${REPO}:v1`, '-o', join(outDir, 'x.qcow2'), '--cache', join(dir, 'cache-err'), '--registry', 'http://127.0.0.1:1'])).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringMatching(/REGISTRY_UNREACHABLE/),
    });
  });
});

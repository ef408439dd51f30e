/**
 * Streamed guest-view ingest of qcow2 uploads (storage/qcow2/stream-classifier.ts,
 * storage/blobs/qcow2-ingest.ts): images in the common layout (qemu-img
 * convert, create + writes in disk order, overlays made by qemu-img rebase,
 * small clusters with many
 * L2 tables, metadata preallocation) are chunked while they stream in, and
 * their index is byte-for-byte the index the spooled path builds from the
 * file (same data chunks, same residue, same recipe: the same dedup as
 * `snapyard push`); images that break the layout (a shuffled host layout,
 * compressed clusters, an internal snapshot, writes in decreasing guest
 * order) fall back to the spooled path with the same result. Every blob
 * reads back byte-exact, through the store and through GET. A streamed
 * upload whose digest does not match at the end stores nothing and leaves
 * no spool file or open file behind.
 */
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ingestQcow2 } from '../storage/blobs/qcow2-ingest.js';
import { readBlob } from '../storage/blobs/blob-reader.js';
import { buildQcow2Index } from '../storage/qcow2/index-builder.js';
import { sha256 } from '../storage/digest.js';
import { makeAllFixtures, randomBytes, runTool, type FixtureSet } from './helpers/qcow2-fixtures.js';
import { sha } from './helpers/oci.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const MiB = 1024 * 1024;
const newDir = tempDirs('snapyard-qstream-');

let s: TestServer;
let dir: string;
let fx: FixtureSet;
/** qemu-img create + qemu-io writes in increasing guest order, a zero cluster, a partial last cluster (virtual size not cluster aligned). */
let created: string;
/** 4 KiB clusters: an L2 table every 2 MiB of guest, each before the data it maps. */
let smallClusters: string;
/** preallocation=metadata: every L2 table first, then the data. */
let prealloc: string;
/** Writes in decreasing guest order: host order is not guest order. */
let reversed: string;
/** An overlay of the variant over the base, as the corpus makes them: an empty overlay on the variant, rebased onto the base. */
let rebased: string;

async function qemuIo(path: string, ...cmds: string[]): Promise<void> {
  await runTool('qemu-io', ['-f', 'qcow2', '-t', 'unsafe', ...cmds.flatMap((c) => ['-c', c]), path]);
}

beforeAll(async () => {
  s = await startTestServer();
  dir = newDir();
  fx = await makeAllFixtures(dir);
  const rnd = join(dir, 'rnd.bin');
  writeFileSync(rnd, randomBytes(21, 512 * 1024));
  created = join(dir, 'created.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', created, String(8 * MiB + 4096)]);
  await qemuIo(created, `write -q -s ${rnd} 0 512k`, 'write -q -P 0x22 3M 64k', 'write -q -z 5M 64k', `write -q -P 0x33 ${8 * MiB} 4k`);
  smallClusters = join(dir, 'small-clusters.qcow2');
  await runTool('qemu-img', ['convert', '-O', 'qcow2', '-o', 'cluster_size=4096', fx.variant, smallClusters]);
  prealloc = join(dir, 'prealloc.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata,cluster_size=65536', prealloc, '16M']);
  await qemuIo(prealloc, `write -q -s ${rnd} 1M 512k`, 'write -q -P 0x44 9M 128k');
  rebased = join(dir, 'rebased.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'variant.qcow2', '-F', 'qcow2', rebased], { cwd: dir });
  await runTool('qemu-img', ['rebase', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', rebased], { cwd: dir });
  reversed = join(dir, 'reversed.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', reversed, '8M']);
  await qemuIo(reversed, 'write -q -P 0x55 6M 64k', `write -q -s ${rnd} 2M 512k`, 'write -q -P 0x66 0 64k');
}, 180_000);

afterAll(async () => {
  await s?.stop();
});

/** The file in odd-sized pieces (an upload's body arrives in whatever pieces the socket gives). */
async function* pieces(path: string, size = 100_003): AsyncGenerator<Buffer> {
  const buf = readFileSync(path);
  for (let i = 0; i < buf.byteLength; i += size) yield buf.subarray(i, i + size);
}

/** The index the spooled path builds from the file (the same builder `snapyard push` runs on the client). */
async function spooledIndex(path: string): Promise<Buffer> {
  const sink = { add: async (b: Uint8Array) => ({ digest: sha256(b) }) };
  const index = await buildQcow2Index(path, sink, { blobDigest: sha(readFileSync(path)) as `sha256:${string}` });
  return index.encode();
}

async function readBack(index: Parameters<typeof readBlob>[1]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of readBlob(s.store.chunks, index)) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

function spoolFiles(): string[] {
  const spool = join(s.dataDir, 'spool');
  return statSync(spool, { throwIfNoEntry: false }) ? readdirSync(spool) : [];
}

describe('streamed qcow2 ingest', () => {
  const cases: Array<[string, () => string, boolean, RegExp?]> = [
    ['base (qemu-img convert)', () => fx.base, true],
    ['variant (qemu-img convert)', () => fx.variant, true],
    ['overlay made by qemu-img rebase (differing clusters in disk order)', () => rebased, true],
    ['create + writes in disk order, partial last cluster', () => created, true],
    ['4 KiB clusters (many L2 tables)', () => smallClusters, true],
    ['preallocation=metadata', () => prealloc, true],
    ['shuffled host layout', () => fx.shuffled, false, /behind the stream|higher guest offset/],
    ['compressed clusters', () => fx.compressed, false, /compressed cluster/],
    ['internal snapshot', () => fx.snapshot, false, /internal snapshots/],
    ['writes in decreasing guest order', () => reversed, false, /behind the stream|higher guest offset/],
    ['overlay written out of guest order (qemu-io writes at 1M, 20M, 8M, ...)', () => fx.overlay, false, /behind the stream|higher guest offset/],
  ];
  for (const [name, file, streams, why] of cases) {
    test(`${name}: ${streams ? 'streamed' : 'falls back'}, index identical to the spooled one, reads back byte-exact`, async () => {
      const path = file();
      const data = readFileSync(path);
      const r = await ingestQcow2(s.store.chunks, pieces(path), { spoolDir: join(s.dataDir, 'spool'), expectDigest: sha(data) as `sha256:${string}` });
      expect(r.layout).toBe('qcow2');
      expect(r.streamed, r.fallback).toBe(streams);
      if (why) expect(r.fallback).toMatch(why);
      expect(Buffer.compare((r.index as { encode(): Buffer }).encode(), await spooledIndex(path))).toBe(0);
      expect((await readBack(r.index)).equals(data)).toBe(true);
      expect(spoolFiles()).toEqual([]);
    }, 60_000);
  }

  test('a tar layer around a qcow2 falls back to the spooled path (member guest view)', async () => {
    const tarDir = newDir();
    await runTool('cp', [fx.base, join(tarDir, 'disk.qcow2')]);
    const tar = join(tarDir, 'layer.tar');
    await runTool('tar', ['-cf', tar, '-C', tarDir, 'disk.qcow2']);
    const data = readFileSync(tar);
    const r = await ingestQcow2(s.store.chunks, pieces(tar), { spoolDir: join(s.dataDir, 'spool') });
    expect(r.streamed).toBe(false);
    expect(r.layout).toBe('qcow2');
    expect((await readBack(r.index)).equals(data)).toBe(true);
  }, 60_000);
});

describe('streamed qcow2 upload over HTTP', () => {
  function openFds(): number {
    return readdirSync('/proc/self/fd').length;
  }

  test('a digest mismatch at the end of a streamed upload stores nothing and leaves nothing behind', async () => {
    const data = readFileSync(fx.base);
    const wrong = sha(Buffer.concat([data, Buffer.from('x')]));
    const fds = openFds();
    const res = await fetch(`${s.url}/v2/stream/bad/blobs/uploads/?digest=${wrong}`, { method: 'POST', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('DIGEST_INVALID');
    for (const d of [wrong, sha(data)]) {
      expect((await fetch(`${s.url}/v2/stream/bad/blobs/${d}`, { method: 'HEAD' })).status).toBe(404);
      expect(await s.store.meta.getBlob(d as `sha256:${string}`)).toBeNull();
    }
    expect(spoolFiles()).toEqual([]);
    // Sockets of the request may take a moment to close.
    for (let i = 0; i < 50 && openFds() > fds; i++) await new Promise((r) => setTimeout(r, 20));
    expect(openFds()).toBeLessThanOrEqual(fds);
  }, 60_000);

  test('streamed and fallback uploads GET back byte-exact (monolithic and in PATCHes)', async () => {
    for (const [repo, path] of [['stream/base', fx.base], ['stream/shuffled', fx.shuffled], ['stream/compressed', fx.compressed]] as const) {
      const data = readFileSync(path);
      const digest = sha(data);
      const open = await fetch(`${s.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
      expect(open.status).toBe(202);
      const loc = open.headers.get('location')!;
      const cut = Math.floor(data.length / 3) + 7;
      const p = await fetch(`${s.url}${loc}`, { method: 'PATCH', body: data.subarray(0, cut), headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `0-${cut - 1}` } });
      expect(p.status).toBe(202);
      const put = await fetch(`${s.url}${p.headers.get('location') ?? loc}${(p.headers.get('location') ?? loc).includes('?') ? '&' : '?'}digest=${digest}`, { method: 'PUT', body: data.subarray(cut), headers: { 'Content-Type': 'application/octet-stream' } });
      expect(put.status).toBe(201);
      const get = await fetch(`${s.url}/v2/${repo}/blobs/${digest}`);
      expect(get.status).toBe(200);
      expect(Buffer.from(await get.arrayBuffer()).equals(data)).toBe(true);
      const rec = await s.store.meta.getBlob(digest as `sha256:${string}`);
      const index = await s.store.blobs.index(rec!);
      expect(index.kind).toBe(1);
      expect(Buffer.compare((index as { encode(): Buffer }).encode(), await spooledIndex(path))).toBe(0);
    }
    expect(spoolFiles()).toEqual([]);
  }, 120_000);
});

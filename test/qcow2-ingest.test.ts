/**
 * qcow2-aware ingest through the OCI upload path (POST + PUT, POST ?digest=,
 * PATCH chunks): a valid qcow2 is stored as a guest view plus host recipe
 * (index kind 1) and reads back byte-exact; hostile and odd qcow2 blobs
 * (truncated, tables past EOF or pointing at themselves, huge sizes, bad
 * cluster_bits, garbage) are accepted and fall back to byte chunks (kind 0),
 * or, where the reader can read them as qemu does, kept as kind 1; either
 * way they GET back byte-identical, quickly, without the server allocating
 * much, and the server keeps serving. The spool directory is left empty.
 *
 * Hostile files are valid qemu-made images with patched bytes, as in
 * test/qcow2-reader.test.ts.
 */
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { makeBaseImage, makeShuffled, randomBytes, runTool, textBytes } from './helpers/qcow2-fixtures.js';
import { sha } from './helpers/oci.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const newDir = tempDirs('snapyard-qingest-');

let s: TestServer;
let dir: string;
/** v3, 64 KiB clusters, 8 MiB: compressible text, random data, a pattern, a zero cluster, a partial cluster write. */
let small: string;
/** `small` through `qemu-img convert -c` (L2 entry 0 is a compressed cluster). */
let smallCompressed: string;
/** An overlay over `small`, with a few writes. */
let smallOverlay: string;
/** A 256 TiB virtual disk with two small writes (one near the end). */
let sparseHuge: string;
/** A realistic image (FAT filesystem with files) and the same guest content with another host layout. */
let base: string;
let baseShuffled: string;

async function qemuIo(path: string, ...cmds: string[]): Promise<void> {
  await runTool('qemu-io', ['-f', 'qcow2', '-t', 'unsafe', ...cmds.flatMap((c) => ['-c', c]), path]);
}

beforeAll(async () => {
  s = await startTestServer();
  dir = newDir();
  const text = join(dir, 'text.bin');
  const rnd = join(dir, 'rnd.bin');
  writeFileSync(text, textBytes(11, 1 * MiB));
  writeFileSync(rnd, randomBytes(12, 512 * KiB));
  small = join(dir, 'small.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', small, '8M']);
  await qemuIo(small, `write -q -s ${text} 0 1M`, `write -q -s ${rnd} 2M 512k`, 'write -q -P 0x22 3M 64k', 'write -q -z 5M 64k', `write -q -P 0x33 ${7 * MiB + 4 * KiB} 4k`);
  smallCompressed = join(dir, 'small-c.qcow2');
  await runTool('qemu-img', ['convert', '-c', '-O', 'qcow2', small, smallCompressed]);
  smallOverlay = join(dir, 'small-o.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'small.qcow2', '-F', 'qcow2', smallOverlay]);
  await qemuIo(smallOverlay, 'write -q -P 0x44 64k 128k', 'write -q -z 2M 64k');
  sparseHuge = join(dir, 'sparse-huge.qcow2');
  await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', sparseHuge, '256T']);
  await qemuIo(sparseHuge, `write -q -s ${rnd} 1M 512k`, `write -q -P 0x55 ${256 * 2 ** 40 - 64 * KiB} 64k`);
  base = await makeBaseImage(dir);
  baseShuffled = await makeShuffled(dir, base);
});

afterAll(async () => {
  await s?.stop();
});

interface Outcome {
  status: number;
  error?: { code: string; message: string };
  ms: number;
  /** Peak growth of this process's RSS (the server runs in it) while the upload ran. */
  rssGrowth: number;
}

/** Uploads `data` to `repo` (POST + PUT with the whole body by default). */
async function upload(repo: string, data: Buffer, how: 'put' | 'post' | 'patch' = 'put', digest = sha(data)): Promise<Outcome> {
  const rss0 = process.memoryUsage.rss();
  let peak = rss0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 2);
  const t0 = performance.now();
  const signal = AbortSignal.timeout(30_000);
  try {
    let res: Response;
    if (how === 'post') {
      res = await fetch(`${s.url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data, headers: { 'Content-Type': 'application/octet-stream' }, signal });
    } else {
      const open = await fetch(`${s.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', signal });
      expect(open.status).toBe(202);
      const loc = open.headers.get('location')!;
      let body: Buffer = data;
      if (how === 'patch') {
        // Three PATCHes, the PUT finishes with an empty body.
        const cuts = [0, Math.floor(data.length / 3), Math.floor((2 * data.length) / 3), data.length];
        for (let i = 0; i < 3; i++) {
          const part = data.subarray(cuts[i]!, cuts[i + 1]!);
          if (part.length === 0) continue;
          const p = await fetch(`${s.url}${loc}`, {
            method: 'PATCH',
            body: part,
            headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${cuts[i]}-${cuts[i + 1]! - 1}` },
            signal,
          });
          expect(p.status).toBe(202);
        }
        body = Buffer.alloc(0);
      }
      res = await fetch(`${s.url}${loc}?digest=${digest}`, { method: 'PUT', body, headers: { 'Content-Type': 'application/octet-stream' }, signal });
    }
    const out: Outcome = { status: res.status, ms: 0, rssGrowth: 0 };
    if (res.status !== 201) {
      const j = (await res.json()) as { errors?: Array<{ code: string; message: string }> };
      out.error = j.errors?.[0];
    } else await res.arrayBuffer();
    out.ms = performance.now() - t0;
    out.rssGrowth = peak - rss0;
    return out;
  } finally {
    clearInterval(sampler);
  }
}

async function getBlob(repo: string, digest: string): Promise<Buffer> {
  const r = await fetch(`${s.url}/v2/${repo}/blobs/${digest}`);
  expect(r.status).toBe(200);
  return Buffer.from(await r.arrayBuffer());
}

async function indexKind(digest: string): Promise<number> {
  const rec = await s.store.meta.getBlob(digest as `sha256:${string}`);
  expect(rec, `blob ${digest} is stored`).not.toBeNull();
  return (await s.store.blobs.index(rec!)).kind;
}

/** Uploads, then: accepted, byte-exact, with the expected index kind; fast and without a big allocation. */
async function expectStored(repo: string, data: Buffer, kind: 0 | 1, how: 'put' | 'post' | 'patch' = 'put'): Promise<void> {
  const r = await upload(repo, data, how);
  expect(r.error, JSON.stringify(r.error)).toBeUndefined();
  expect(r.status).toBe(201);
  expect(r.ms).toBeLessThan(15_000);
  expect(r.rssGrowth).toBeLessThan(256 * MiB);
  const got = await getBlob(repo, sha(data));
  expect(got.byteLength).toBe(data.byteLength);
  expect(got.equals(data)).toBe(true);
  expect(await indexKind(sha(data))).toBe(kind);
  // Ranges through the recipe are exact too (a window across the middle).
  if (data.byteLength > 4) {
    const a = Math.floor(data.byteLength / 3);
    const b = Math.min(data.byteLength, a + 200_000) - 1;
    const part = await fetch(`${s.url}/v2/${repo}/blobs/${sha(data)}`, { headers: { Range: `bytes=${a}-${b}` } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(data.subarray(a, b + 1))).toBe(true);
  }
}

const be = (b: Buffer, at: number) => Number(b.readBigUInt64BE(at));
const l1Offset = (b: Buffer) => be(b, 40);
const l2Offset = (b: Buffer) => Number(b.readBigUInt64BE(l1Offset(b)) & 0x00ff_ffff_ffff_fe00n);
const COPIED = 1n << 63n;

describe('valid qcow2 through the OCI upload: guest view + host recipe (kind 1), byte-exact', () => {
  test('POST + PUT, POST ?digest= and PATCH chunks all store the guest-view layout', async () => {
    await expectStored('valid/put', readFileSync(base), 1, 'put');
    await expectStored('valid/post', readFileSync(small), 1, 'post');
    await expectStored('valid/patch', readFileSync(smallCompressed), 1, 'patch');
  });

  test('an overlay, a 256 TiB sparse disk, and a non-qcow2 blob (kind 0)', async () => {
    await expectStored('valid/overlay', readFileSync(smallOverlay), 1);
    const huge = readFileSync(sparseHuge);
    expect(huge.byteLength).toBeLessThan(16 * MiB);
    await expectStored('valid/huge', huge, 1);
    const idx = await s.store.blobs.index((await s.store.meta.getBlob(sha(huge) as `sha256:${string}`))!);
    expect(idx.kind === 1 && idx.layout.virtualSize).toBe(256 * 2 ** 40);
    await expectStored('valid/raw', randomBytes(77, 700 * KiB), 0);
  });

  test('other geometries: v2 with 512-byte clusters, 2 MiB clusters, extended L2, a partial last cluster, size 0', async () => {
    const raw = join(dir, 'small.raw');
    await runTool('qemu-img', ['convert', '-O', 'raw', small, raw]);
    const conv = async (name: string, opts: string) => {
      const p = join(dir, `${name}.qcow2`);
      await runTool('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', opts, raw, p]);
      return p;
    };
    const partial = join(dir, 'partial.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', partial, String(MiB + 1536)]);
    await qemuIo(partial, 'write -q -P 0x51 0 4k', `write -q -P 0x52 ${MiB} 1536`);
    const empty = join(dir, 'empty0.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', empty, '0']);
    const files = [
      await conv('v2-512', 'compat=0.10,cluster_size=512'),
      await conv('v3-2m', 'cluster_size=2M'),
      await conv('extl2', 'extended_l2=on,cluster_size=128k'),
      partial,
      empty,
    ];
    for (const [i, f] of files.entries()) await expectStored(`valid/geo${i}`, readFileSync(f), 1);
  });

  test('concurrent uploads of the same image and of a hostile one', async () => {
    const good = readFileSync(smallOverlay);
    const bad = readFileSync(small);
    bad.writeBigUInt64BE(bad.readBigUInt64BE(l2Offset(bad)), l2Offset(bad) + 8); // two clusters share one host cluster
    const rs = await Promise.all([upload('conc/a', good), upload('conc/b', good, 'post'), upload('conc/c', good, 'patch'), upload('conc/d', bad)]);
    expect(rs.map((r) => r.status)).toEqual([201, 201, 201, 201]);
    for (const repo of ['conc/a', 'conc/b', 'conc/c']) expect((await getBlob(repo, sha(good))).equals(good)).toBe(true);
    expect((await getBlob('conc/d', sha(bad))).equals(bad)).toBe(true);
    expect(await indexKind(sha(good))).toBe(1);
    expect(await indexKind(sha(bad))).toBe(0);
  });

  test('the same guest content with another host layout adds little to the store', async () => {
    await expectStored('valid/put', readFileSync(base), 1); // already there: a no-op
    const before = await s.store.chunks.stats();
    const shuffled = readFileSync(baseShuffled);
    await expectStored('valid/shuffled', shuffled, 1);
    const after = await s.store.chunks.stats();
    expect(after.stored - before.stored).toBeLessThan(1 * MiB);
    expect(after.stored - before.stored).toBeLessThan(shuffled.byteLength / 10);
  });
});

/** A hostile case: which image, how to break it, and the index kind it must end up with. */
interface Hostile {
  name: string;
  src: () => string;
  edit: (b: Buffer) => Buffer;
  kind: 0 | 1;
}

const patch = (f: (b: Buffer) => void) => (b: Buffer) => {
  f(b);
  return b;
};

const HOSTILE: Hostile[] = [
  { name: 'truncated to 3 bytes (part of the magic)', src: () => small, edit: (b) => b.subarray(0, 3), kind: 0 },
  { name: 'truncated to the magic alone', src: () => small, edit: (b) => b.subarray(0, 4), kind: 0 },
  { name: 'truncated inside the header', src: () => small, edit: (b) => b.subarray(0, 50), kind: 0 },
  { name: 'truncated inside the L1 table', src: () => small, edit: (b) => b.subarray(0, l1Offset(b) + 4), kind: 0 },
  { name: 'truncated inside the L2 table', src: () => small, edit: (b) => b.subarray(0, l2Offset(b) + 100), kind: 0 },
  // qemu reads the missing tail of the last data cluster as zeros: still understood.
  { name: 'truncated inside the last data cluster', src: () => small, edit: (b) => b.subarray(0, b.length - 1000), kind: 1 },
  { name: 'L1 table offset past EOF', src: () => small, edit: patch((b) => b.writeBigUInt64BE(1n << 40n, 40)), kind: 0 },
  { name: 'L1 table offset unaligned', src: () => small, edit: patch((b) => b.writeBigUInt64BE(BigInt(l1Offset(b) + 8), 40)), kind: 0 },
  { name: 'L2 table offset past EOF', src: () => small, edit: patch((b) => b.writeBigUInt64BE((1n << 40n) | COPIED, l1Offset(b))), kind: 0 },
  { name: 'data cluster past EOF', src: () => small, edit: patch((b) => b.writeBigUInt64BE((1n << 40n) | COPIED, l2Offset(b))), kind: 0 },
  { name: 'l1_size 0xffffffff', src: () => small, edit: patch((b) => b.writeUInt32BE(0xffffffff, 36)), kind: 0 },
  { name: 'l1_size of a 32 MiB table in a small file', src: () => small, edit: patch((b) => b.writeUInt32BE((32 * MiB) / 8, 36)), kind: 0 },
  { name: 'virtual size 2^62', src: () => small, edit: patch((b) => b.writeBigUInt64BE(1n << 62n, 24)), kind: 0 },
  // Self-referencing tables: read as qemu reads them (the table's bytes become guest data).
  { name: 'L1 entry pointing at the L1 table itself', src: () => small, edit: patch((b) => b.writeBigUInt64BE(BigInt(l1Offset(b)) | COPIED, l1Offset(b))), kind: 1 },
  { name: 'L2 entry pointing at its own L2 table', src: () => small, edit: patch((b) => b.writeBigUInt64BE(BigInt(l2Offset(b)) | COPIED, l2Offset(b) + 8)), kind: 1 },
  { name: 'L2 entry pointing at the L1 table', src: () => small, edit: patch((b) => b.writeBigUInt64BE(BigInt(l1Offset(b)) | COPIED, l2Offset(b))), kind: 1 },
  // Two guest clusters on one host cluster: the recipe cannot take a host byte from two places.
  { name: 'two L2 entries sharing one host cluster', src: () => small, edit: patch((b) => b.writeBigUInt64BE(b.readBigUInt64BE(l2Offset(b)), l2Offset(b) + 8)), kind: 0 },
  { name: 'cluster_bits 8', src: () => small, edit: patch((b) => b.writeUInt32BE(8, 20)), kind: 0 },
  { name: 'cluster_bits 22', src: () => small, edit: patch((b) => b.writeUInt32BE(22, 20)), kind: 0 },
  { name: 'cluster_bits 0xffffffff', src: () => small, edit: patch((b) => b.writeUInt32BE(0xffffffff, 20)), kind: 0 },
  // The reader never needs refcounts: a refcount table pointing at itself changes nothing for it.
  { name: 'refcount table entry pointing at the refcount table itself', src: () => small, edit: patch((b) => b.writeBigUInt64BE(BigInt(be(b, 48)), be(b, 48))), kind: 1 },
  { name: 'refcount table offset past EOF', src: () => small, edit: patch((b) => b.writeBigUInt64BE(1n << 40n, 48)), kind: 0 },
  { name: 'garbage after the qcow2 magic', src: () => small, edit: (b) => Buffer.concat([b.subarray(0, 4), randomBytes(31, 2 * MiB)]), kind: 0 },
  { name: 'header_length past the first cluster', src: () => small, edit: patch((b) => b.writeUInt32BE(64 * KiB + 8, 100)), kind: 0 },
  { name: 'unknown incompatible feature bit', src: () => small, edit: patch((b) => b.writeBigUInt64BE(1n << 9n, 72)), kind: 0 },
  { name: 'nb_snapshots 0xffffffff', src: () => small, edit: patch((b) => b.writeUInt32BE(0xffffffff, 60)), kind: 0 },
  { name: 'compressed descriptor past EOF', src: () => smallCompressed, edit: patch((b) => b.writeBigUInt64BE((1n << 62n) | (1n << 40n), l2Offset(b))), kind: 0 },
  // Valid descriptor, garbage compressed bytes: found while the guest data is chunked, after chunks were stored.
  {
    name: 'garbage compressed cluster data',
    src: () => smallCompressed,
    edit: patch((b) => {
      const off = Number(b.readBigUInt64BE(l2Offset(b)) & ((1n << 54n) - 1n));
      randomBytes(5, 400).copy(b, off);
    }),
    kind: 0,
  },
];

describe('hostile and odd qcow2 blobs through the OCI upload', () => {
  test('the unpatched images the cases start from are what the cases assume', () => {
    const b = readFileSync(small);
    expect(b.readUInt32BE(20)).toBe(16); // 64 KiB clusters
    expect(l2Offset(b)).toBeGreaterThan(0);
    expect(b.readBigUInt64BE(l2Offset(b)) & COPIED).toBe(COPIED); // L2 entries 0 and 1: allocated data
    expect(b.readBigUInt64BE(l2Offset(b) + 8) & COPIED).toBe(COPIED);
    const c = readFileSync(smallCompressed);
    expect(c.readBigUInt64BE(l2Offset(c)) & (1n << 62n)).toBe(1n << 62n); // entry 0 is compressed
  });

  for (const [i, h] of HOSTILE.entries()) {
    test(`${h.name}: accepted, byte-exact, index kind ${h.kind}`, async () => {
      const data = h.edit(readFileSync(h.src()));
      await expectStored(`hostile/c${i}`, data, h.kind);
    });
  }

  test('a qcow2 body that does not match its digest is DIGEST_INVALID, and nothing is stored', async () => {
    const data = readFileSync(small);
    const wrong = sha('not this');
    for (const how of ['put', 'post'] as const) {
      const r = await upload('hostile/digest', data, how, wrong);
      expect(r.status).toBe(400);
      expect(r.error?.code).toBe('DIGEST_INVALID');
      expect(r.error?.message).toMatch(/hashes to sha256:[0-9a-f]{64}, not sha256:/);
    }
    expect((await fetch(`${s.url}/v2/hostile/digest/blobs/${wrong}`, { method: 'HEAD' })).status).toBe(404);
    expect((await fetch(`${s.url}/v2/hostile/digest/blobs/${sha(data)}`, { method: 'HEAD' })).status).toBe(404);
  });

  test('afterwards: the server still serves, and no spool file is left behind', async () => {
    expect((await fetch(`${s.url}/v2/`)).status).toBe(200);
    expect((await getBlob('valid/post', sha(readFileSync(small)))).equals(readFileSync(small))).toBe(true);
    const spool = join(s.dataDir, 'spool');
    const left = statSync(spool, { throwIfNoEntry: false }) ? readdirSync(spool) : [];
    expect(left).toEqual([]);
  });
});

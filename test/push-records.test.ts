/**
 * Pushes whose new chunks go as pack records (storage/protocol/record-upload.ts):
 * compressed by the client's workers into the store's stored form and kept
 * as they are by a store that takes them (the local one), after being decoded
 * and hashed there. Against a real server on loopback, with a real qcow2
 * image: the blob is byte-exact and verify passes; hostile record streams
 * (a stored form under another chunk's name, bad magic, huge or truncated
 * records, more raw bytes than the limit) are 4xx in the OCI error format
 * and leave nothing behind; on both backends (the S3 store checks them on
 * its codec workers and spools them as they came). A store that does not take
 * records (a local store without worker threads) does not offer them, refuses
 * them with 415, and the client sends the zstd stream.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ClientCache } from '../client/cache.js';
import { push, RECORDS_MIN_BYTES } from '../client/push.js';
import { Registry } from '../client/registry.js';
import { parseRef } from '../client/ref.js';
import { ChunkCodec } from '../storage/chunks/chunk-codec.js';
import { RECORD_HEADER_SIZE, writeRecordHeader } from '../storage/chunks/pack-files.js';
import { sha256, type Digest } from '../storage/digest.js';
import { verifyStore } from '../storage/maintenance/verify.js';
import { RECORDS_UPLOAD_TYPE } from '../storage/protocol/record-upload.js';
import { compactBody, repeatingIndex, startLimitedServer, type LimitedServer } from './helpers/push-wire.js';
import { makeBaseImage, makeVariant, randomBytes, textBytes } from './helpers/qcow2-fixtures.js';
import { testLocal } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-records-');
let s: LimitedServer;
let reg: Registry;
let dir: string;

beforeAll(async () => {
  s = await startLimitedServer({ maxBlobBytes: 256 * 1024 * 1024 });
  reg = new Registry(s.url);
  dir = tmp();
}, 120_000);

afterAll(async () => {
  await reg?.close();
  await s?.stop();
});

/** Records end to end: each (name, stored form) as a pack record. */
function records(items: Array<{ digest: Digest; stored: Buffer }>): Buffer {
  return Buffer.concat(
    items.map(({ digest, stored }) => {
      const rec = Buffer.alloc(RECORD_HEADER_SIZE + stored.byteLength);
      writeRecordHeader(rec, 0, digest, stored.byteLength);
      stored.copy(rec, RECORD_HEADER_SIZE);
      return rec;
    }),
  );
}

async function post(path: string, body: Uint8Array, type: string): Promise<{ status: number; json: any }> {
  const r = await fetch(`${s.url}${path}`, { method: 'POST', body, headers: { 'content-type': type }, signal: AbortSignal.timeout(30_000) } as RequestInit);
  const text = await r.text();
  return { status: r.status, json: text.startsWith('{') ? JSON.parse(text) : text };
}

/** A push session for chunks `chunks` (an index that lists each once); its id and the forms the server offered. */
async function open(repo: string, chunks: Buffer[]): Promise<{ session: string; forms: string[] }> {
  const miss = await post(`/snapyard/v1/${repo}/_missing`, compactBody(repeatingIndex(chunks, chunks.map(() => 1))), 'application/vnd.snapyard.compact-index.v1+zstd');
  expect(miss.status).toBe(200);
  return { session: miss.json.session, forms: miss.json.uploadForms };
}

describe('push as records', () => {
  test('a qcow2 base and its variant push as records where the store takes them; blobs byte-exact, verify passes', async () => {
    const base = await makeBaseImage(dir, { sizeMiB: 48 });
    const games = await makeVariant(dir, base, 'games');
    const r1 = await push(parseRef('rec/win98:base'), base, { registry: reg, cache: null, recordsMinBytes: 0 });
    expect(r1.uploadForm).toBe('records');
    expect(r1.newChunks).toBeGreaterThan(10);
    const r2 = await push(parseRef('rec/win98:games'), games, { registry: reg, cache: null, recordsMinBytes: 0 });
    expect(r2.uploadForm).toBe('records');
    expect(r2.newChunks).toBeLessThan(r1.newChunks);
    // Below the threshold (the default: 64 MiB of new bytes), the zstd stream, squeezed harder.
    const again = await push(parseRef('rec/win98:games2'), games, { registry: reg, cache: null });
    expect(again.uploadForm).toBe('none'); // nothing new
    expect(RECORDS_MIN_BYTES).toBeGreaterThan(r2.newRawBytes);
    // A file that is not qcow2: its chunks are byte ranges of the file, read the same way.
    const rawFile = join(dir, 'plain.img');
    writeFileSync(rawFile, Buffer.concat([randomBytes(5, 3 * 1024 * 1024 + 123), Buffer.alloc(512 * 1024), textBytes(6, 2 * 1024 * 1024)]));
    const r3 = await push(parseRef('rec/plain:v1'), rawFile, { registry: reg, cache: null, recordsMinBytes: 0 });
    expect(r3.uploadForm).toBe('records');
    for (const [file, r] of [[base, r1], [games, r2], [rawFile, r3]] as const) {
      const bytes = readFileSync(file);
      expect(r.blobDigest).toBe(sha256(bytes));
      const got = await fetch(`${s.url}/v2/rec/${file === rawFile ? 'plain' : 'win98'}/blobs/${r.blobDigest}`);
      expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);
    }
    const v = await verifyStore(s.store);
    expect(v.problems).toEqual([]);
    expect(v.ok).toBe(true);
  }, 180_000);

  test('hostile record streams are 4xx in the OCI error format and store nothing', async () => {
    const codec = new ChunkCodec(1);
    const a = textBytes(11, 70_000);
    const b = randomBytes(12, 50_000);
    const { session, forms } = await open('rec/hostile', [a, b]);
    const up = (body: Buffer) => post(`/snapyard/v1/rec/hostile/_upload?session=${session}`, body, RECORDS_UPLOAD_TYPE);
    expect(forms).toEqual(['zstd-stream', 'records', 'frames']);
    // b's stored form under a's name: decoded and hashed by the store, refused.
    const swapped = await up(records([{ digest: sha256(a), stored: codec.encode(b) }]));
    expect(swapped.status).toBe(400);
    expect(swapped.json.errors[0].code).toBe('DIGEST_INVALID');
    // A flipped byte inside a's frame (its checksum, or zstd, or sha256 sees it).
    const flipped = codec.encode(a);
    flipped[flipped.byteLength - 9]! ^= 0x20;
    const bad = await up(records([{ digest: sha256(a), stored: flipped }]));
    expect(bad.status).toBe(400);
    expect(bad.json.errors[0].code).toBe('DIGEST_INVALID');
    // Not records at all.
    const magic = records([{ digest: sha256(a), stored: codec.encode(a) }]);
    magic.write('XXXX', 0);
    expect((await up(magic)).json.errors[0]).toMatchObject({ code: 'SIZE_INVALID', message: expect.stringMatching(/does not start with SYR1/) });
    // A record claiming 1 GiB of stored bytes, and one cut short.
    const huge = records([{ digest: sha256(a), stored: codec.encode(a) }]);
    huge.writeUInt32LE(1 << 30, 36);
    expect((await up(huge)).json.errors[0]).toMatchObject({ code: 'SIZE_INVALID', message: expect.stringMatching(/claims 1073741824 stored bytes/) });
    const cut = records([{ digest: sha256(a), stored: codec.encode(a) }]);
    const short = await up(cut.subarray(0, cut.byteLength - 100));
    expect(short.status).toBe(400);
    expect(short.json.errors[0].code).toBe('SIZE_INVALID');
    // More raw bytes than the blob limit, claimed by the chunk headers: 413 before anything is decoded.
    const liar = codec.encode(a);
    liar.writeUInt32LE(200 * 1024 * 1024, 8);
    const many = records(Array.from({ length: 2 }, () => ({ digest: sha256(a), stored: liar })));
    const over = await up(many);
    expect(over.status).toBe(400); // 200 MiB is past a chunk's largest (16 MiB): refused as malformed first
    for (const d of [sha256(a), sha256(b)]) expect(await s.store.chunks.has(d)).toBe(false);
    // The session still takes an honest upload, and its blob commits.
    const ok = await up(records([a, b].map((c) => ({ digest: sha256(c), stored: codec.encode(c) }))));
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ chunks: 2, bytes: a.byteLength + b.byteLength });
    for (const d of [sha256(a), sha256(b)]) expect(await s.store.chunks.has(d)).toBe(true);
  }, 60_000);

  test('records claiming more raw bytes than maxBlobBytes are 413', async () => {
    const small = await startLimitedServer({ maxBlobBytes: 100_000 });
    try {
      const codec = new ChunkCodec(1);
      const chunks = [textBytes(21, 60_000), textBytes(22, 60_000)];
      const miss = await fetch(`${small.url}/snapyard/v1/lim/r/_missing`, { method: 'POST', body: compactBody(repeatingIndex([chunks[0]!], [1])) });
      const { session } = (await miss.json()) as { session: string };
      const r = await fetch(`${small.url}/snapyard/v1/lim/r/_upload?session=${session}`, {
        method: 'POST',
        body: records(chunks.map((c) => ({ digest: sha256(c), stored: codec.encode(c) }))),
        headers: { 'content-type': RECORDS_UPLOAD_TYPE },
      });
      expect(r.status).toBe(413);
      expect(((await r.json()) as any).errors[0].code).toBe('SIZE_INVALID');
    } finally {
      await small.stop();
    }
  });

  testLocal('a store without stored-form writes does not offer records, refuses them (415), and push sends the stream', 'a local store without worker threads', async () => {
    const inline = await startLimitedServer({}, { workers: 0 });
    const r = new Registry(inline.url);
    try {
      const codec = new ChunkCodec(1);
      const a = textBytes(31, 70_000);
      const miss = await fetch(`${inline.url}/snapyard/v1/inl/r/_missing`, { method: 'POST', body: compactBody(repeatingIndex([a], [1])) });
      const { session, uploadForms } = (await miss.json()) as { session: string; uploadForms: string[] };
      expect(uploadForms).toEqual(['zstd-stream', 'frames']);
      const up = await fetch(`${inline.url}/snapyard/v1/inl/r/_upload?session=${session}`, { method: 'POST', body: records([{ digest: sha256(a), stored: codec.encode(a) }]), headers: { 'content-type': RECORDS_UPLOAD_TYPE } });
      expect(up.status).toBe(415);
      expect(((await up.json()) as any).errors[0].code).toBe('UNSUPPORTED');
      const base = await makeBaseImage(tmp(), { sizeMiB: 16 });
      const p = await push(parseRef('inl/win98:base'), base, { registry: r, cache: null, recordsMinBytes: 0 });
      expect(p.uploadForm).toBe('zstd-stream');
      const got = await fetch(`${inline.url}/v2/inl/win98/blobs/${p.blobDigest}`);
      expect(Buffer.from(await got.arrayBuffer()).equals(readFileSync(base))).toBe(true);
    } finally {
      await r.close();
      await inline.stop();
    }
  }, 120_000);

  test('a file that changed after it was indexed is refused by the registry (every record is hashed there), and the push says so', async () => {
    const file = await makeBaseImage(dir, { sizeMiB: 24, name: 'changing' });
    const cache = new ClientCache(join(dir, 'cache-changing'));
    utimesSync(file, 1_700_000_000, 1_700_000_000); // whole seconds: set again below to the very same mtime
    try {
      // Indexed once (remembered by device, inode, size and mtime)...
      const first = await push(parseRef('chg/win98:v1'), file, { registry: reg, cache, recordsMinBytes: 0 });
      expect(first.uploadForm).toBe('records');
      // ...then a guest data cluster changes in place, size and mtime kept: the remembered index is stale.
      const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', file], { encoding: 'utf8' })) as Array<{ data: boolean; offset?: number; length: number }>;
      const data = map.find((e) => e.data && e.offset !== undefined && e.length >= 65536)!;
      const fd = openSync(file, 'r+');
      writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, data.offset! + 8192);
      closeSync(fd);
      utimesSync(file, 1_700_000_000, 1_700_000_000);
      const fresh = await startLimitedServer({ maxBlobBytes: 256 * 1024 * 1024 });
      const other = new Registry(fresh.url);
      try {
        await expect(push(parseRef('chg/win98:v2'), file, { registry: other, cache, recordsMinBytes: 0 })).rejects.toThrow(/no longer holds what it was indexed with \(did the file change\?\)/);
        // Nothing was committed, and what the store kept is sound.
        expect((await fetch(`${fresh.url}/v2/chg/win98/manifests/v2`)).status).toBe(404);
        expect((await verifyStore(fresh.store)).ok).toBe(true);
      } finally {
        await other.close();
        await fresh.stop();
      }
    } finally {
      await cache.close();
    }
  }, 180_000);
});

/**
 * Hostile bodies for the delta protocol (issue 8, "Hostile input suite"),
 * property-based (fast-check), against a real server on loopback:
 * `_missing` (compact indexes, kinds 0 and 1: mutated, repeated chunks, huge
 * claimed sizes, random bytes, truncated zstd, zstd bombs), `_upload`
 * (mutated frame streams, record streams and chunk-frame streams), `_similar`, `_commit` (sessions opened with mutated indexes,
 * mutated JSON), `_delta` and `_chunks` (mutated JSON).
 *
 * Every answer is a 2xx or a 4xx in the OCI error format (never 5xx), within
 * 5 s; the server's peak memory stays bounded; afterwards a snapshot pushed
 * before the fuzzing pulls byte-exact and verify passes.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { compress } from 'zstd-napi';
import { ChunkIndexBuilder, type ChunkIndex, type ChunkList } from '../storage/blobs/chunk-index.js';
import { chunkBuffer, DEFAULT_FASTCDC } from '../storage/blobs/fastcdc.js';
import { sha256, sha256Raw, type Digest } from '../storage/digest.js';
import { EXTENT_DATA, OP_DATA, OP_RESIDUE, Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { verifyStore } from '../storage/maintenance/verify.js';
import { ChunkCodec } from '../storage/chunks/chunk-codec.js';
import { RECORD_HEADER_SIZE, writeRecordHeader } from '../storage/chunks/pack-files.js';
import { RECORDS_UPLOAD_TYPE } from '../storage/protocol/record-upload.js';
import { ENC_DICT, ENC_STORED, FRAMES_UPLOAD_TYPE, frameHeader } from '../storage/protocol/wire.js';
import { compressWithDict } from '../storage/delta/dict-codec.js';
import { encodeSketch, sketch } from '../storage/delta/resemblance.js';
import { compactBody, peakRss, resetPeakRss, startLimitedServer, uploadBody, zstdBomb, type LimitedServer } from './helpers/push-wire.js';
import { hostileValue, jsonMutationArb, mutateJson } from './helpers/json-mutate.js';
import { prng } from './helpers/oci.js';

const MiB = 1024 * 1024;
const REPO = 'fz/r';

let s: LimitedServer;
const counts: Record<string, number> = {};
let peakBefore = 0;

interface Reference {
  blob: Buffer;
  chunks: Buffer[];
  bytesIndex: ChunkIndex;
  qcowIndex: Qcow2Index;
  qcowBlob: Buffer;
  qcowChunks: Buffer[];
  manifest: string;
}
let ref: Reference;

/** The byte chunks of `data` (FastCDC, as clients cut them) and their list. */
function cut(data: Buffer): { chunks: Buffer[]; list: ChunkList } {
  const b = new ChunkIndexBuilder(DEFAULT_FASTCDC);
  const chunks = chunkBuffer(data).map((c) => data.subarray(c.offset, c.offset + c.length));
  for (const c of chunks) b.push(sha256(c), c.byteLength);
  return { chunks, list: b.buildList() };
}

/** A small but well-formed qcow2 recipe: residue (header-ish bytes), then the data stream, then more residue. */
function qcowReference(): { index: Qcow2Index; blob: Buffer; chunks: Buffer[] } {
  const data = prng(400_000, 501);
  const residue = prng(90_000, 502);
  const d = cut(data);
  const r = cut(residue);
  const blob = Buffer.concat([residue.subarray(0, 60_000), data, residue.subarray(60_000)]);
  const layout = {
    virtualSize: 1 << 30, clusterSize: 65536, hasBacking: false,
    extentOffsets: Float64Array.from([1 << 20]), extentLengths: Float64Array.from([data.byteLength]), extentKinds: Uint8Array.from([EXTENT_DATA]),
    opKinds: Uint8Array.from([OP_RESIDUE, OP_DATA, OP_RESIDUE]),
    opLengths: Float64Array.from([60_000, data.byteLength, 30_000]),
    opSources: Float64Array.from([0, 0, 0]),
  };
  const index = new Qcow2Index(sha256(blob), blob.byteLength, DEFAULT_FASTCDC, layout, d.list, r.list);
  return { index, blob, chunks: [...d.chunks, ...r.chunks] };
}

type Answer = { status: number; text: string };

/** One request; the answer must come within 5 s and be a 2xx, or a 4xx with an OCI error body. */
async function ask(path: string, body: Uint8Array | string, label: string, contentType?: string): Promise<Answer> {
  counts[label] = (counts[label] ?? 0) + 1;
  const headers = contentType ? { 'content-type': contentType } : undefined;
  const r = await fetch(`${s.url}${path}`, { method: 'POST', body, headers, signal: AbortSignal.timeout(5_000) } as RequestInit);
  const text = await r.text();
  const ok = (r.status >= 200 && r.status < 300) || (r.status >= 400 && r.status < 500);
  if (!ok) throw new Error(`${label}: ${path} answered ${r.status}: ${text.slice(0, 500)}`);
  if (r.status >= 400) {
    const b = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    if (typeof b.errors?.[0]?.code !== 'string' || typeof b.errors[0].message !== 'string') throw new Error(`${label}: ${r.status} without an OCI error body: ${text.slice(0, 300)}`);
  }
  return { status: r.status, text };
}

/** Byte-level mutations of a buffer. */
type ByteMutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set32'; at: number; value: number }
  | { op: 'set64'; at: number; value: bigint }
  | { op: 'truncate'; at: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'repeat'; at: number; len: number; times: number };

const extreme32 = fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 36, 65536, 16 * MiB);
const extreme64 = fc.constantFrom(0n, 1n, 2n ** 32n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n, 210n * 10n ** 9n);
const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('set32' as const), at: fc.nat(), value: extreme32 }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('set64' as const), at: fc.nat(), value: extreme64 }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('repeat' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 400 }), times: fc.constantFrom(2, 100, 5000) }) },
);

/** Field offsets of a compact body worth hitting (the 8-byte head, the index header's counts and sizes). */
const HOT = [0, 8 + 24, 8 + 64, 8 + 72, 8 + 80, 8 + 88, 8 + 92, 8 + 96];

function mutateBytes(buf: Buffer, ms: ByteMutation[]): Buffer {
  let b = Buffer.from(buf);
  for (const m of ms) {
    if (b.byteLength === 0) break;
    const at = m.at % 3 === 0 ? HOT[m.at % HOT.length]! % b.byteLength : m.at % b.byteLength;
    switch (m.op) {
      case 'flip':
        b[at] = b[at]! ^ (1 << m.bit);
        break;
      case 'set32':
        if (at + 4 <= b.byteLength) b.writeUInt32LE(m.value >>> 0, at);
        break;
      case 'set64':
        if (at + 8 <= b.byteLength) b.writeBigUInt64LE(m.value, at);
        break;
      case 'truncate':
        b = b.subarray(0, at);
        break;
      case 'insert':
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case 'repeat': {
        const piece = b.subarray(at, Math.min(b.byteLength, at + m.len));
        b = Buffer.concat([b.subarray(0, at), ...Array<Buffer>(m.times).fill(piece), b.subarray(at)]);
        break;
      }
    }
  }
  return b;
}

/** A `_missing` body: the compact index (kind 0 or 1, prefix width 8 or 32), mutated before or after compression. */
const missingBody: fc.Arbitrary<{ body: Buffer; kind: string }> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ qcow: fc.boolean(), width: fc.constantFrom(8, 32), ms: fc.array(byteMutation, { minLength: 1, maxLength: 4 }) }).map(({ qcow, width, ms }) => {
    const raw = Buffer.concat([Buffer.from([width, 0, 0, 0, 0, 0, 0, 0]), (qcow ? ref.qcowIndex : ref.bytesIndex).encode(width)]);
    return { body: compress(mutateBytes(raw, ms), { compressionLevel: 1 }), kind: 'mutated index' };
  }) },
  { weight: 2, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 3 }).map((ms) => ({ body: mutateBytes(compactBody(ref.bytesIndex), ms), kind: 'mutated zstd' })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 3000 }).map((u) => ({ body: Buffer.from(u), kind: 'random bytes' })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 200 }).map((n) => { const c = compactBody(ref.bytesIndex); return { body: c.subarray(0, Math.max(1, c.byteLength - n)), kind: 'truncated zstd' }; }) },
  { weight: 1, arbitrary: fc.constantFrom(32, 96).map((mb) => ({ body: zstdBomb(mb * MiB), kind: 'zstd bomb' })) },
);

beforeAll(async () => {
  s = await startLimitedServer({ maxCompactIndexBytes: 16 * MiB, maxBlobBytes: 4 * 1024 * MiB, maxSessionsPerUser: 100_000, maxSessionsTotal: 100_000 });
  const blob = prng(1_200_000, 500);
  const c = cut(blob);
  const builder = new ChunkIndexBuilder(DEFAULT_FASTCDC);
  for (const ch of c.chunks) builder.push(sha256(ch), ch.byteLength);
  const q = qcowReference();
  ref = { blob, chunks: c.chunks, bytesIndex: builder.build(sha256(blob), blob.byteLength), qcowIndex: q.index, qcowBlob: q.blob, qcowChunks: q.chunks, manifest: '' };
  // The snapshot that must survive: pushed through the protocol, then published with an OCI manifest.
  const miss = JSON.parse((await ask(`/snapyard/v1/${REPO}/_missing`, compactBody(ref.bytesIndex), 'setup')).text) as { session: string };
  await ask(`/snapyard/v1/${REPO}/_upload?session=${miss.session}`, uploadBody(ref.chunks), 'setup');
  expect((await ask(`/snapyard/v1/${REPO}/_commit`, JSON.stringify({ session: miss.session, digest: sha256(blob) }), 'setup')).status).toBe(201);
  const config = Buffer.from('{}');
  const cr = await fetch(`${s.url}/v2/${REPO}/blobs/uploads/?digest=${sha256(config)}`, { method: 'POST', body: config });
  expect(cr.status).toBe(201);
  const manifest = {
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(config), size: 2 },
    layers: [{ mediaType: 'application/octet-stream', digest: sha256(blob), size: blob.byteLength }],
  };
  const put = await fetch(`${s.url}/v2/${REPO}/manifests/keep`, { method: 'PUT', body: JSON.stringify(manifest), headers: { 'Content-Type': manifest.mediaType } });
  expect(put.status).toBe(201);
  ref.manifest = put.headers.get('docker-content-digest')!;
  resetPeakRss();
  peakBefore = peakRss();
});

afterAll(async () => {
  await s?.stop();
});

/** JSON mutations whose bodies stay small enough to build quickly (arrays grown 5000 times at most: limits are far below). */
const smallerJsonMutation = jsonMutationArb.filter((m) => m.op !== 'grow' || m.times <= 5000);

const RUNS = { missing: 2000, upload: 800, records: 400, frames: 300, similar: 300, commit: 1000, delta: 1000, chunks: 1000 };

describe('fuzzing the delta protocol bodies', () => {
  test(`_missing: ${RUNS.missing} hostile compact-index bodies`, async () => {
    await fc.assert(fc.asyncProperty(missingBody, async ({ body, kind }) => {
      await ask(`/snapyard/v1/${REPO}/_missing`, body, `_missing (${kind})`);
    }), { numRuns: RUNS.missing, seed: 8001 });
  });

  test(`_upload: ${RUNS.upload} hostile frame streams into an open session`, async () => {
    const frames = Buffer.concat(ref.chunks.slice(0, 4).flatMap((c) => [Buffer.from(sha256(c).slice(7), 'hex'), (() => { const l = Buffer.alloc(4); l.writeUInt32LE(c.byteLength); return l; })(), c]));
    const stream = fc.oneof(
      { weight: 5, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 4 }).map((ms) => compress(mutateBytes(frames, ms), { compressionLevel: 1 })) },
      { weight: 2, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 2 }).map((ms) => mutateBytes(uploadBody(ref.chunks.slice(0, 3)), ms)) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2000 }).map((u) => Buffer.from(u)) },
      { weight: 1, arbitrary: fc.constant(zstdBomb(64 * MiB)) },
    );
    await fc.assert(fc.asyncProperty(stream, async (body) => {
      const miss = JSON.parse((await ask(`/snapyard/v1/${REPO}/_missing`, compactBody(ref.bytesIndex), '_upload (session)')).text) as { session: string };
      await ask(`/snapyard/v1/${REPO}/_upload?session=${miss.session}`, body, '_upload');
    }), { numRuns: RUNS.upload, seed: 8002 });
  });

  test(`_upload: ${RUNS.records} hostile record streams (stored forms) into an open session`, async () => {
    const codec = new ChunkCodec(1);
    const records = Buffer.concat(ref.chunks.slice(0, 4).map((c) => {
      const stored = codec.encode(c);
      const rec = Buffer.alloc(RECORD_HEADER_SIZE + stored.byteLength);
      writeRecordHeader(rec, 0, sha256(c), stored.byteLength);
      stored.copy(rec, RECORD_HEADER_SIZE);
      return rec;
    }));
    const stream = fc.oneof(
      { weight: 6, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 4 }).map((ms) => mutateBytes(records, ms)) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2000 }).map((u) => Buffer.from(u)) },
    );
    await fc.assert(fc.asyncProperty(stream, async (body) => {
      const miss = JSON.parse((await ask(`/snapyard/v1/${REPO}/_missing`, compactBody(ref.bytesIndex), '_upload records (session)')).text) as { session: string };
      await ask(`/snapyard/v1/${REPO}/_upload?session=${miss.session}`, body, '_upload records', RECORDS_UPLOAD_TYPE);
    }), { numRuns: RUNS.records, seed: 8006 });
  });

  test(`_upload: ${RUNS.frames} hostile chunk-frame streams (stored and dictionary frames), and ${RUNS.similar} _similar bodies`, async () => {
    const codec = new ChunkCodec(1);
    const [c0, c1, c2] = ref.chunks as [Buffer, Buffer, Buffer];
    const dict = compressWithDict(c1, c0, 3);
    const frames = Buffer.concat([
      frameHeader(sha256Raw(c2), ENC_STORED, [], codec.encode(c2).byteLength), codec.encode(c2),
      frameHeader(sha256Raw(c1), ENC_DICT, [sha256Raw(c0)], dict.byteLength), dict,
    ]);
    const stream = fc.oneof(
      { weight: 6, arbitrary: fc.array(byteMutation, { minLength: 1, maxLength: 4 }).map((ms) => mutateBytes(frames, ms)) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2000 }).map((u) => Buffer.from(u)) },
    );
    await fc.assert(fc.asyncProperty(stream, async (body) => {
      const miss = JSON.parse((await ask(`/snapyard/v1/${REPO}/_missing`, compactBody(ref.bytesIndex), '_upload frames (session)')).text) as { session: string };
      await ask(`/snapyard/v1/${REPO}/_upload?session=${miss.session}`, body, '_upload frames', FRAMES_UPLOAD_TYPE);
    }), { numRuns: RUNS.frames, seed: 8007 });
    const miss = JSON.parse((await ask(`/snapyard/v1/${REPO}/_missing`, compactBody(ref.bytesIndex), '_similar (session)')).text) as { session: string };
    const sk = encodeSketch(sketch(c1));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(sk.byteLength);
    const good = Buffer.concat([len, sk, len, sk]);
    const blob = sha256(ref.blob);
    await fc.assert(fc.asyncProperty(fc.array(byteMutation, { minLength: 0, maxLength: 4 }), async (ms) => {
      await ask(`/snapyard/v1/${REPO}/_similar?session=${miss.session}&have=${blob}`, mutateBytes(good, ms), '_similar', 'application/octet-stream');
    }), { numRuns: RUNS.similar, seed: 8008 });
  });

  test(`_commit: ${RUNS.commit} sessions opened with mutated indexes (repeats, huge sizes, overlapping ops), and mutated requests`, async () => {
    const arb = fc.record({
      qcow: fc.boolean(),
      ms: fc.array(byteMutation, { minLength: 0, maxLength: 3 }),
      json: fc.array(smallerJsonMutation, { maxLength: 2 }),
      claim: fc.constantFrom('index', 'actual', 'other'),
    });
    await fc.assert(fc.asyncProperty(arb, async ({ qcow, ms, json, claim }) => {
      const index = qcow ? ref.qcowIndex : ref.bytesIndex;
      const raw = Buffer.concat([Buffer.from([32, 0, 0, 0, 0, 0, 0, 0]), index.encode(32)]);
      const m = await ask(`/snapyard/v1/${REPO}/_missing`, compress(mutateBytes(raw, ms), { compressionLevel: 1 }), '_commit (session)');
      if (m.status !== 200) return;
      const session = (JSON.parse(m.text) as { session: string }).session;
      await ask(`/snapyard/v1/${REPO}/_upload?session=${session}`, uploadBody(qcow ? ref.qcowChunks : ref.chunks), '_commit (upload)');
      const digest = claim === 'index' ? index.blobDigest : claim === 'actual' ? sha256(qcow ? ref.qcowBlob : ref.blob) : sha256(Buffer.from('other'));
      const body = mutateJson({ session, digest }, json);
      const c = await ask(`/snapyard/v1/${REPO}/_commit`, JSON.stringify(body), '_commit');
      if (c.status === 201) {
        // Only ever the blob the chunks really make.
        const d = (JSON.parse(c.text) as { digest: Digest }).digest;
        expect([sha256(ref.blob), sha256(ref.qcowBlob)]).toContain(d);
      }
    }), { numRuns: RUNS.commit, seed: 8003 });
  });

  test(`_delta: ${RUNS.delta} mutated plan requests`, async () => {
    const arb = fc.oneof(
      fc.array(smallerJsonMutation, { minLength: 1, maxLength: 3 }).map((ms) => JSON.stringify(mutateJson({ target: 'keep', have: [sha256(ref.blob)] }, ms))),
      fc.record({ target: hostileValue, have: fc.array(hostileValue, { maxLength: 80 }) }).map((o) => JSON.stringify(o)),
      fc.string({ maxLength: 200 }),
    );
    await fc.assert(fc.asyncProperty(arb, async (body) => {
      await ask(`/snapyard/v1/${REPO}/_delta`, body, '_delta');
    }), { numRuns: RUNS.delta, seed: 8004 });
  });

  test(`_chunks: ${RUNS.chunks} mutated chunk requests`, async () => {
    const hexes = ref.chunks.map((c) => sha256(c).slice(7));
    const arb = fc.oneof(
      fc.array(smallerJsonMutation, { minLength: 1, maxLength: 3 }).map((ms) => JSON.stringify(mutateJson({ blob: sha256(ref.blob), chunks: hexes.slice(0, 3), have: [] }, ms))),
      fc.record({ blob: fc.constantFrom(sha256(ref.blob), 'sha256:' + '0'.repeat(64)), chunks: fc.array(fc.constantFrom(...hexes, 'f'.repeat(64), 'zz'), { maxLength: 40 }), have: fc.array(fc.constantFrom(sha256(ref.blob), 'x'), { maxLength: 5 }), estimate: fc.boolean() }).map((o) => JSON.stringify(o)),
    );
    await fc.assert(fc.asyncProperty(arb, async (body) => {
      await ask(`/snapyard/v1/${REPO}/_chunks`, body, '_chunks');
    }), { numRuns: RUNS.chunks, seed: 8005 });
  });

  test('afterwards: bounded memory, the snapshot pushed before pulls byte-exact, verify passes', async () => {
    const grew = peakRss() - peakBefore;
    const total = Object.entries(counts).map(([k, v]) => `${k}: ${v}`).join(', ');
    console.log(`push-protocol fuzz: ${Object.values(counts).reduce((a, b) => a + b, 0)} requests (${total}); peak RSS grew ${(grew / MiB).toFixed(0)} MiB`);
    expect(grew).toBeLessThan(512 * MiB);
    const m = await fetch(`${s.url}/v2/${REPO}/manifests/keep`, { headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect(m.headers.get('docker-content-digest')).toBe(ref.manifest);
    const b = await fetch(`${s.url}/v2/${REPO}/blobs/${sha256(ref.blob)}`);
    expect(Buffer.from(await b.arrayBuffer()).equals(ref.blob)).toBe(true);
    const v = await verifyStore(s.store);
    expect(v.problems).toEqual([]);
    expect(v.ok).toBe(true);
  });
});

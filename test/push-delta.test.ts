/**
 * A push of a new version against a previous one the client holds (--seed):
 * the compact index goes as a difference from the seed's (`_missing?base=`),
 * `_similar` names held chunks like the new ones, and the new chunks go as
 * frames compressed with those as dictionaries. Against a real server on
 * loopback with real qcow2 images: fewer bytes than the same push without
 * the seed, the blob byte-exact, verify passes; hostile requests (unknown
 * sessions and bases, cut sketches, dictionaries the store lacks, frames that
 * decompress to other bytes) are 4xx in the OCI error format and store nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readFileSync } from 'node:fs';
import { push } from '../client/push.js';
import { Registry } from '../client/registry.js';
import { parseRef } from '../client/ref.js';
import { ChunkCodec } from '../storage/chunks/chunk-codec.js';
import { compressWithDict } from '../storage/delta/dict-codec.js';
import { sha256, sha256Raw } from '../storage/digest.js';
import { verifyStore } from '../storage/maintenance/verify.js';
import { ENC_DICT, ENC_STORED, FRAMES_UPLOAD_TYPE, frameHeader } from '../storage/protocol/wire.js';
import { compactBody, repeatingIndex, startLimitedServer, type LimitedServer } from './helpers/push-wire.js';
import { binaryBytes, makeBaseImage, makeVariant, standardVariantEdits, textBytes } from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-pushdelta-');
const KiB = 1024;
let s: LimitedServer;
let reg: Registry;
let base: string;
let v1: string;
let v2: string;

beforeAll(async () => {
  const dir = tmp();
  base = await makeBaseImage(dir, { sizeMiB: 32 });
  v1 = await makeVariant(dir, base, 'v1', standardVariantEdits());
  // v2: small patches scattered over files v1 has (new chunks that resemble held ones), and a new text file.
  v2 = await makeVariant(dir, v1, 'v2', {
    patch: [0, 1, 2, 3].map((i) => ({ path: 'WINDOWS/SYSTEM/MSHTML.DLL', offset: 40 * KiB + i * 120 * KiB, bytes: binaryBytes(700 + i, 200) })),
    write: [{ path: 'MYDOCS/V2NOTES.TXT', content: textBytes(77, 30 * KiB) }],
  });
  s = await startLimitedServer();
  reg = new Registry(s.url);
  for (const [tag, file] of [['base', base], ['v1', v1]] as const) await push(parseRef(`pd/win98:${tag}`), file, { registry: reg, cache: null });
}, 240_000);

afterAll(async () => {
  await reg?.close();
  await s?.stop();
});

async function post(path: string, body: Uint8Array, type = 'application/octet-stream'): Promise<{ status: number; json: any }> {
  const r = await fetch(`${s.url}${path}`, { method: 'POST', body, headers: { 'content-type': type }, signal: AbortSignal.timeout(30_000) } as RequestInit);
  const text = await r.text();
  return { status: r.status, json: text.startsWith('{') ? JSON.parse(text) : text };
}

describe('push against a seed', () => {
  test('a new version pushed with the previous one as seed sends less than without it; byte-exact, verify passes', async () => {
    // The same push, without the seed, into a second server holding the same two versions: the bytes to beat.
    const other = await startLimitedServer();
    const otherReg = new Registry(other.url);
    let plain: Awaited<ReturnType<typeof push>>;
    try {
      for (const [tag, file] of [['base', base], ['v1', v1]] as const) await push(parseRef(`pd/win98:${tag}`), file, { registry: otherReg, cache: null });
      plain = await push(parseRef('pd/win98:v2'), v2, { registry: otherReg, cache: null });
    } finally {
      await otherReg.close();
      await other.stop();
    }
    const r = await push(parseRef('pd/win98:v2'), v2, { registry: reg, cache: null, seeds: [v1] });
    expect(r.uploadForm).toBe('frames');
    expect(plain.uploadForm).toBe('zstd-stream');
    expect(r.newChunks).toBe(plain.newChunks);
    expect(r.newChunks).toBeGreaterThan(0);
    expect(r.dictChunks).toBeGreaterThan(0);
    expect(r.uploadBytes).toBeLessThan(plain.uploadBytes);
    const bytes = readFileSync(v2);
    expect(r.blobDigest).toBe(sha256(bytes));
    const got = await fetch(`${s.url}/v2/pd/win98/blobs/${r.blobDigest}`);
    expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true);
    const v = await verifyStore(s.store);
    expect(v.problems).toEqual([]);
  }, 240_000);

  test('a seed the registry does not hold is ignored: the push still works', async () => {
    const r = await push(parseRef('pd/other:v2'), v2, { registry: reg, cache: null, seeds: [v1] });
    // v1 is not a blob of pd/other: no frames against it (everything is held already, so nothing is sent at all).
    expect(r.uploadForm).toBe('none');
    expect(r.dictChunks).toBe(0);
  }, 60_000);

  test('hostile _similar, _missing?base= and frame uploads are 4xx in the OCI error format and store nothing', async () => {
    const v1Blob = sha256(readFileSync(v1));
    const a = textBytes(41, 60_000);
    const similarTo = Buffer.from(a);
    similarTo.write('a small change', 30_000);
    const miss = await post('/snapyard/v1/pd/win98/_missing', compactBody(repeatingIndex([similarTo], [1])), 'application/vnd.snapyard.compact-index.v1+zstd');
    expect(miss.status).toBe(200);
    expect(miss.json.uploadForms).toContain('frames');
    const session = miss.json.session as string;
    const sketches = Buffer.from([5, 0, 0, 0, 1, 10, 3, 4, 5]);
    expect((await post(`/snapyard/v1/pd/win98/_similar?session=nope&have=${v1Blob}`, sketches)).status).toBe(404);
    expect((await post(`/snapyard/v1/pd/win98/_similar?session=${session}&have=${sha256(Buffer.from('x'))}`, sketches)).json.errors[0].code).toBe('BLOB_UNKNOWN');
    expect((await post(`/snapyard/v1/pd/win98/_similar?session=${session}`, sketches)).status).toBe(400);
    const cut = await post(`/snapyard/v1/pd/win98/_similar?session=${session}&have=${v1Blob}`, Buffer.from([200, 0, 0, 0, 1, 10]));
    expect(cut.status).toBe(400);
    expect(cut.json.errors[0].code).toBe('SIZE_INVALID');
    // A base that is not a blob of the repository, and a body that is not zstd against it.
    expect((await post(`/snapyard/v1/pd/win98/_missing?base=${sha256(Buffer.from('x'))}`, Buffer.from('junk'), 'application/vnd.snapyard.compact-index.v1+zstd')).json.errors[0].code).toBe('BLOB_UNKNOWN');
    expect((await post(`/snapyard/v1/pd/win98/_missing?base=${v1Blob}`, Buffer.from('junk'), 'application/vnd.snapyard.compact-index.v1+zstd')).status).toBe(400);

    const up = (body: Buffer) => post(`/snapyard/v1/pd/win98/_upload?session=${session}`, body, FRAMES_UPLOAD_TYPE);
    const held = sha256Raw(Buffer.from('a chunk nobody stored'));
    const dictOf = (raw: Buffer, ids: Buffer[], payload: Buffer) => Buffer.concat([frameHeader(sha256Raw(raw), ENC_DICT, ids, payload.byteLength), payload]);
    // A dictionary the store lacks.
    const missingDict = await up(dictOf(similarTo, [held], compressWithDict(similarTo, a, 3)));
    expect(missingDict.status).toBe(400);
    expect(missingDict.json.errors[0].code).toBe('BLOB_UNKNOWN');
    // A dictionary frame of other bytes than its name says (dictionary: a chunk the store holds).
    const storedChunk = (await s.store.chunks.get((await s.store.chunks.add(a)).digest));
    await s.store.chunks.flush();
    const lie = Buffer.concat([frameHeader(sha256Raw(similarTo), ENC_DICT, [sha256Raw(storedChunk)], 0)]);
    const z = compressWithDict(Buffer.from('something else entirely'), storedChunk, 3);
    lie.writeUInt32LE(z.byteLength, 36);
    const wrong = await up(Buffer.concat([lie, z]));
    expect(wrong.status).toBe(400);
    expect(wrong.json.errors[0].code).toBe('DIGEST_INVALID');
    // A stored form under another name, and a frame of an unknown encoding.
    const aStored = new ChunkCodec(1).encode(a);
    const swapped = await up(Buffer.concat([frameHeader(sha256Raw(similarTo), ENC_STORED, [], aStored.byteLength), aStored]));
    expect(swapped.status).toBe(400);
    expect(swapped.json.errors[0].code).toBe('DIGEST_INVALID');
    const unknown = frameHeader(sha256Raw(similarTo), 7, [], 0);
    expect((await up(unknown)).json.errors[0].code).toBe('SIZE_INVALID');
    expect(await s.store.chunks.has(sha256(similarTo))).toBe(false);
    // The honest frame: compressed against the held chunk, it commits.
    const ok = await up(dictOf(similarTo, [sha256Raw(storedChunk)], compressWithDict(similarTo, storedChunk, 3)));
    expect(ok.status).toBe(200);
    expect(ok.json).toMatchObject({ chunks: 1, bytes: similarTo.byteLength });
    expect(await s.store.chunks.has(sha256(similarTo))).toBe(true);
  }, 60_000);
});

import { beforeAll, describe, expect, test } from 'vitest';
import { testLocal, useRegistry, type TestServer } from './helpers/server.js';
import { OCI_MANIFEST, Oci, errorCode, prng, sha } from './helpers/oci.js';

let s: TestServer;
let oci: Oci;
const layer = prng(2_500_000, 31);
let img: { digest: string; body: string; layerDigest: string };
useRegistry((r) => ({ s, oci } = r));
beforeAll(async () => {
  img = await oci.pushImage('pull/repo', 'v1', layer);
});

describe('manifests', () => {
  test('GET by tag and by digest return the exact bytes with type, length and digest', async () => {
    for (const ref of ['v1', img.digest]) {
      const r = await oci.req('GET', `/v2/pull/repo/manifests/${ref}`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe(OCI_MANIFEST);
      expect(r.headers.get('docker-content-digest')).toBe(img.digest);
      expect(r.headers.get('content-length')).toBe(String(Buffer.byteLength(img.body)));
      expect(await r.text()).toBe(img.body);
    }
  });

  test('HEAD has the headers and no body', async () => {
    const r = await oci.req('HEAD', `/v2/pull/repo/manifests/v1`);
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(img.digest);
    expect(r.headers.get('content-length')).toBe(String(Buffer.byteLength(img.body)));
    expect(await r.text()).toBe('');
  });

  test('unknown tag or digest is MANIFEST_UNKNOWN; unknown repository NAME_UNKNOWN', async () => {
    for (const ref of ['nope', sha('nope')]) {
      const r = await oci.req('GET', `/v2/pull/repo/manifests/${ref}`);
      expect(r.status).toBe(404);
      expect(await errorCode(r)).toBe('MANIFEST_UNKNOWN');
    }
    const r = await oci.req('GET', `/v2/pull/absent/manifests/v1`);
    expect(r.status).toBe(404);
    expect(await errorCode(r)).toBe('NAME_UNKNOWN');
    expect((await oci.req('HEAD', `/v2/pull/repo/manifests/nope`)).status).toBe(404);
  });

  test('a malformed digest reference is DIGEST_INVALID', async () => {
    const r = await oci.req('GET', `/v2/pull/repo/manifests/sha256:1234`);
    expect(r.status).toBe(400);
    expect(await errorCode(r)).toBe('DIGEST_INVALID');
  });
});

describe('blobs', () => {
  test('GET returns the exact bytes with length and digest', async () => {
    const r = await oci.req('GET', `/v2/pull/repo/blobs/${img.layerDigest}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('docker-content-digest')).toBe(img.layerDigest);
    expect(r.headers.get('content-length')).toBe(String(layer.byteLength));
    expect(Buffer.from(await r.arrayBuffer()).equals(layer)).toBe(true);
  });

  test('HEAD has length and digest, no body', async () => {
    const r = await oci.req('HEAD', `/v2/pull/repo/blobs/${img.layerDigest}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-length')).toBe(String(layer.byteLength));
    expect((await r.arrayBuffer()).byteLength).toBe(0);
  });

  test('Range requests across chunk boundaries return 206 with the exact slice', async () => {
    const cases: Array<[string, number, number]> = [
      ['bytes=0-0', 0, 1],
      ['bytes=0-99', 0, 100],
      ['bytes=65000-400000', 65000, 400001],
      ['bytes=1000000-', 1_000_000, layer.byteLength],
      ['bytes=-12345', layer.byteLength - 12345, layer.byteLength],
      [`bytes=2000000-${layer.byteLength + 1000}`, 2_000_000, layer.byteLength],
    ];
    for (let i = 0; i < 30; i++) {
      const a = Math.floor(Math.random() * layer.byteLength);
      const b = a + Math.floor(Math.random() * Math.min(600_000, layer.byteLength - a));
      cases.push([`bytes=${a}-${b}`, a, b + 1]);
    }
    for (const [h, a, b] of cases) {
      const r = await oci.req('GET', `/v2/pull/repo/blobs/${img.layerDigest}`, { headers: { Range: h } });
      expect(r.status, h).toBe(206);
      expect(r.headers.get('content-range')).toBe(`bytes ${a}-${b - 1}/${layer.byteLength}`);
      expect(r.headers.get('content-length')).toBe(String(b - a));
      expect(Buffer.from(await r.arrayBuffer()).equals(layer.subarray(a, b)), h).toBe(true);
    }
  });

  test('an unsatisfiable range is 416 with Content-Range */size', async () => {
    for (const h of [`bytes=${layer.byteLength}-`, 'bytes=500-100', 'bytes=-0']) {
      const r = await oci.req('GET', `/v2/pull/repo/blobs/${img.layerDigest}`, { headers: { Range: h } });
      expect(r.status, h).toBe(416);
      expect(r.headers.get('content-range')).toBe(`bytes */${layer.byteLength}`);
    }
  });

  test('unknown blob is BLOB_UNKNOWN (HEAD: 404 without body)', async () => {
    const r = await oci.req('GET', `/v2/pull/repo/blobs/${sha('absent')}`);
    expect(r.status).toBe(404);
    expect(await errorCode(r)).toBe('BLOB_UNKNOWN');
    const h = await oci.req('HEAD', `/v2/pull/repo/blobs/${sha('absent')}`);
    expect(h.status).toBe(404);
    expect(await h.text()).toBe('');
  });

  testLocal('a chunk corrupted on disk is detected, never served as good data', 'flips a byte in a local pack file', async () => {
    const data = prng(300_000, 32);
    const d = await oci.pushBlob('pull/corrupt', data);
    const blob = (await s.store.meta.getBlob(d as `sha256:${string}`))!;
    const index = (await s.store.blobs.index(blob)).lists()[0]!;
    const { readFileSync, writeFileSync } = await import('node:fs');
    const at = s.localChunks.where(index.digestAt(1))!;
    const pack = readFileSync(at.path);
    const i = at.offset + at.length - 5;
    pack.writeUInt8(pack.readUInt8(i) ^ 0x40, i);
    writeFileSync(at.path, pack);
    const full = await oci.req('GET', `/v2/pull/corrupt/blobs/${d}`).then(async (r) => Buffer.from(await r.arrayBuffer())).catch((e: Error) => e);
    // Either the transfer breaks off, or what arrived is short: never the full, wrong content.
    if (Buffer.isBuffer(full)) expect(full.byteLength).toBeLessThan(data.byteLength);
    else expect(full).toBeInstanceOf(Error);
    // Data before the bad chunk is still served.
    const first = await oci.req('GET', `/v2/pull/corrupt/blobs/${d}`, { headers: { Range: `bytes=0-${index.entry(0).length - 1}` } });
    expect(Buffer.from(await first.arrayBuffer()).equals(data.subarray(0, index.entry(0).length))).toBe(true);
  });
});

test('unknown endpoints and methods answer in the OCI error format', async () => {
  const r = await oci.req('GET', '/v2/pull/repo/nothing/here');
  expect(r.status).toBe(404);
  expect(((await r.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBeTruthy();
  const m = await oci.req('POST', `/v2/pull/repo/manifests/v1`);
  expect(m.status).toBe(405);
  expect(await errorCode(m)).toBe('UNSUPPORTED');
});

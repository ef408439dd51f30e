/**
 * sha512 digests everywhere the OCI API takes a digest (issue 8; the
 * distribution-spec conformance tool's sha512 data set): blob uploads
 * (monolithic, chunked, qcow2), GET / HEAD / DELETE, cross-repository mounts,
 * manifests whose descriptors are sha512, manifests PUT and read by sha512,
 * referrers of a sha512 subject. Chunks stay sha256 inside; a blob is known
 * by every digest it was pushed under (the sha256 too).
 */
import { describe, expect, test } from 'vitest';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { useRegistry, type TestServer } from './helpers/server.js';
import { errorCode, OCI_INDEX, OCI_MANIFEST, prng, sha, type Oci } from './helpers/oci.js';
import { tempDirs } from './helpers/tmp.js';

let s: TestServer;
let oci: Oci;
useRegistry((r) => {
  s = r.s;
  oci = r.oci;
});
const tmp = tempDirs('snapyard-sha512-');

const sha512 = (b: Uint8Array | string) => `sha512:${createHash('sha512').update(b).digest('hex')}`;

async function getBytes(path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; digest: string | null }> {
  const r = await oci.req('GET', path, { headers });
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()), digest: r.headers.get('docker-content-digest') };
}

describe('blobs by sha512', () => {
  test('monolithic upload: 201 at its sha512; GET / HEAD / Range by sha512 and by sha256; a wrong sha512 stores nothing', async () => {
    const blob = prng(300_000, 51);
    const d = sha512(blob);
    const r = await oci.req('POST', `/v2/s512/mono/blobs/uploads/?digest=${d}`, { body: blob, headers: { 'Content-Type': 'application/octet-stream' } });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`/v2/s512/mono/blobs/${d}`);
    expect(r.headers.get('docker-content-digest')).toBe(d);
    const get = await getBytes(`/v2/s512/mono/blobs/${d}`);
    expect([get.status, get.digest]).toEqual([200, d]);
    expect(get.body.equals(blob)).toBe(true);
    const head = await oci.req('HEAD', `/v2/s512/mono/blobs/${d}`);
    expect([head.status, head.headers.get('content-length'), head.headers.get('docker-content-digest')]).toEqual([200, String(blob.byteLength), d]);
    const part = await getBytes(`/v2/s512/mono/blobs/${d}`, { Range: 'bytes=1000-1999' });
    expect(part.status).toBe(206);
    expect(part.body.equals(blob.subarray(1000, 2000))).toBe(true);
    // Known by its sha256 too (the name it is stored under).
    const by256 = await getBytes(`/v2/s512/mono/blobs/${sha(blob)}`);
    expect([by256.status, by256.digest]).toEqual([200, sha(blob)]);

    const other = prng(5000, 52);
    const wrong = sha512(prng(5000, 53));
    const bad = await oci.req('POST', `/v2/s512/mono/blobs/uploads/?digest=${wrong}`, { body: other });
    expect(bad.status).toBe(400);
    expect(await errorCode(bad)).toBe('DIGEST_INVALID');
    expect((await oci.req('HEAD', `/v2/s512/mono/blobs/${wrong}`)).status).toBe(404);
    expect((await oci.req('HEAD', `/v2/s512/mono/blobs/${sha(other)}`)).status).toBe(404);
    // Malformed sha512s and unknown algorithms stay 400.
    for (const x of ['sha512:abc', `sha512:${'A'.repeat(128)}`, `sha384:${'a'.repeat(96)}`]) {
      const g = await oci.req('GET', `/v2/s512/mono/blobs/${x}`);
      expect(g.status, x).toBe(400);
      expect(await errorCode(g)).toBe('DIGEST_INVALID');
    }
  });

  test('chunked upload (POST, PATCH, PATCH, PUT ?digest=sha512) and a wrong digest at the end', async () => {
    const blob = prng(250_000, 54);
    const d = sha512(blob);
    for (const [digest, want] of [[sha512('nope'), 400], [d, 201]] as const) {
      const start = await oci.req('POST', '/v2/s512/chunked/blobs/uploads/');
      expect(start.status).toBe(202);
      let loc = start.headers.get('location')!;
      for (const [a, b] of [[0, 100_000], [100_000, 250_000]]) {
        const p = await oci.req('PATCH', loc, { body: blob.subarray(a, b), headers: { 'Content-Range': `${a}-${b! - 1}`, 'Content-Type': 'application/octet-stream' } });
        expect(p.status).toBe(202);
        loc = p.headers.get('location')!;
      }
      const put = await oci.req('PUT', `${loc}${loc.includes('?') ? '&' : '?'}digest=${digest}`);
      expect(put.status).toBe(want);
    }
    const get = await getBytes(`/v2/s512/chunked/blobs/${d}`);
    expect([get.status, get.digest]).toEqual([200, d]);
    expect(get.body.equals(blob)).toBe(true);
  });

  test('a qcow2 image uploaded by sha512 is ingested qcow2-aware and reads back byte-exact', async () => {
    const dir = tmp();
    const img = join(dir, 'a.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', img, '8M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x5a 1M 2M', img]);
    const bytes = readFileSync(img);
    const d = sha512(bytes);
    expect((await oci.req('POST', `/v2/s512/qcow2/blobs/uploads/?digest=${d}`, { body: bytes })).status).toBe(201);
    const get = await getBytes(`/v2/s512/qcow2/blobs/${d}`);
    expect(get.body.equals(bytes)).toBe(true);
    const rec = (await s.store.blobs.stat('s512/qcow2', sha(bytes) as `sha256:${string}`))!;
    expect((await s.store.blobs.index(rec)).kind).toBe(1); // the guest view + host recipe
  });

  test('cross-repository mount by sha512, and DELETE by sha512', async () => {
    const blob = prng(40_000, 55);
    const d = sha512(blob);
    expect((await oci.req('POST', `/v2/s512/from/blobs/uploads/?digest=${d}`, { body: blob })).status).toBe(201);
    const m = await oci.req('POST', `/v2/s512/to/blobs/uploads/?mount=${d}&from=s512/from`);
    expect(m.status).toBe(201);
    expect(m.headers.get('docker-content-digest')).toBe(d);
    expect((await getBytes(`/v2/s512/to/blobs/${d}`)).body.equals(blob)).toBe(true);
    // An unknown sha512 is not mountable: a session is opened instead (202).
    const un = await oci.req('POST', `/v2/s512/to/blobs/uploads/?mount=${sha512('unknown')}&from=s512/from`);
    expect(un.status).toBe(202);
    const del = await oci.req('DELETE', `/v2/s512/to/blobs/${d}`);
    expect(del.status).toBe(202);
    expect((await oci.req('HEAD', `/v2/s512/to/blobs/${d}`)).status).toBe(404);
    expect((await oci.req('HEAD', `/v2/s512/from/blobs/${d}`)).status).toBe(200);
  });
});

describe('manifests by sha512', () => {
  test('descriptors by sha512, PUT and GET by sha512 (and by sha256), tags, referrers of a sha512 subject, DELETE', async () => {
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
    const layer = prng(60_000, 56);
    for (const b of [config, layer]) expect((await oci.req('POST', `/v2/s512/m/blobs/uploads/?digest=${sha512(b)}`, { body: b })).status).toBe(201);
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha512(config), size: config.byteLength },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha512(layer), size: layer.byteLength }],
    });
    const md = sha512(manifest);
    const put = await oci.req('PUT', `/v2/s512/m/manifests/${md}`, { body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(put.status, await put.clone().text()).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(md);
    expect(put.headers.get('location')).toBe(`/v2/s512/m/manifests/${md}`);
    const get = await getBytes(`/v2/s512/m/manifests/${md}`);
    expect([get.status, get.digest, get.body.toString()]).toEqual([200, md, manifest]);
    const head = await oci.req('HEAD', `/v2/s512/m/manifests/${md}`);
    expect([head.status, head.headers.get('docker-content-digest')]).toEqual([200, md]);
    expect((await getBytes(`/v2/s512/m/manifests/${sha(manifest)}`)).body.toString()).toBe(manifest);
    // A wrong sha512 in the URL is DIGEST_INVALID; a manifest naming an unknown sha512 blob is MANIFEST_BLOB_UNKNOWN.
    const wrong = await oci.req('PUT', `/v2/s512/m/manifests/${sha512('x')}`, { body: manifest, headers: { 'Content-Type': OCI_MANIFEST } });
    expect([wrong.status, await errorCode(wrong)]).toEqual([400, 'DIGEST_INVALID']);
    const missing = JSON.stringify({ ...JSON.parse(manifest), layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha512('never'), size: 5 }] });
    const miss = await oci.req('PUT', '/v2/s512/m/manifests/missing', { body: missing, headers: { 'Content-Type': OCI_MANIFEST } });
    expect([miss.status, await errorCode(miss)]).toEqual([400, 'MANIFEST_BLOB_UNKNOWN']);
    // By tag, and in an index that names it by sha512.
    expect((await oci.req('PUT', '/v2/s512/m/manifests/v1', { body: manifest, headers: { 'Content-Type': OCI_MANIFEST } })).status).toBe(201);
    const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: md, size: Buffer.byteLength(manifest) }] });
    expect((await oci.req('PUT', `/v2/s512/m/manifests/${sha512(index)}`, { body: index, headers: { 'Content-Type': OCI_INDEX } })).status).toBe(201);
    // A referrer whose subject is the manifest's sha512.
    const artifact = JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      artifactType: 'application/x-sig',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha('{}'), size: 2 },
      layers: [],
      subject: { mediaType: OCI_MANIFEST, digest: md, size: Buffer.byteLength(manifest) },
    });
    expect((await oci.req('POST', `/v2/s512/m/blobs/uploads/?digest=${sha('{}')}`, { body: '{}' })).status).toBe(201);
    const ap = await oci.req('PUT', `/v2/s512/m/manifests/${sha512(artifact)}`, { body: artifact, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(ap.status).toBe(201);
    for (const subject of [md, sha(manifest)]) {
      const refs = (await (await oci.req('GET', `/v2/s512/m/referrers/${subject}`)).json()) as { manifests: Array<{ digest: string; artifactType: string }> };
      expect(refs.manifests.map((m) => m.artifactType), subject).toEqual(['application/x-sig']);
    }
    // DELETE by sha512 deletes it (and its tag).
    expect((await oci.req('DELETE', `/v2/s512/m/manifests/${sha512(artifact)}`)).status).toBe(202);
    expect((await oci.req('GET', `/v2/s512/m/manifests/${sha512(artifact)}`)).status).toBe(404);
  });
});

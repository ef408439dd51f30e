import { expect, test } from 'vitest';
import { useRegistry, type TestServer } from './helpers/server.js';
import { Oci, errorCode, prng } from './helpers/oci.js';

let s: TestServer;
let oci: Oci;
useRegistry((r) => ({ s, oci } = r));

test('DELETE by tag removes only the tag; the manifest stays reachable by digest', async () => {
  const img = await oci.pushImage('mgmt', 'keep', prng(1000, 61));
  await oci.pushManifest('mgmt', 'drop', img.body);
  expect((await oci.req('DELETE', '/v2/mgmt/manifests/drop')).status).toBe(202);
  expect((await oci.req('GET', '/v2/mgmt/manifests/drop')).status).toBe(404);
  expect((await oci.req('GET', '/v2/mgmt/manifests/keep')).status).toBe(200);
  expect((await oci.req('GET', `/v2/mgmt/manifests/${img.digest}`)).status).toBe(200);
  const tags = (await (await oci.req('GET', '/v2/mgmt/tags/list')).json()) as { tags: string[] };
  expect(tags.tags).toEqual(['keep']);
});

test('DELETE by digest removes the manifest and every tag pointing at it', async () => {
  const img = await oci.pushImage('mgmt2', 't1', prng(1000, 62));
  await oci.pushManifest('mgmt2', 't2', img.body);
  expect((await oci.req('DELETE', `/v2/mgmt2/manifests/${img.digest}`)).status).toBe(202);
  for (const ref of ['t1', 't2', img.digest]) {
    const r = await oci.req('GET', `/v2/mgmt2/manifests/${ref}`);
    expect(r.status).toBe(404);
    expect(await errorCode(r)).toBe('MANIFEST_UNKNOWN');
  }
  const again = await oci.req('DELETE', `/v2/mgmt2/manifests/${img.digest}`);
  expect(again.status).toBe(404);
  expect(await errorCode(again)).toBe('MANIFEST_UNKNOWN');
});

test('DELETE of a blob makes it unknown in that repository only', async () => {
  const data = prng(200_000, 63);
  const d = await oci.pushBlob('mgmt3', data);
  await oci.pushBlob('mgmt4', data);
  expect((await oci.req('DELETE', `/v2/mgmt3/blobs/${d}`)).status).toBe(202);
  const r = await oci.req('GET', `/v2/mgmt3/blobs/${d}`);
  expect(r.status).toBe(404);
  expect(await errorCode(r)).toBe('BLOB_UNKNOWN');
  const other = await oci.req('GET', `/v2/mgmt4/blobs/${d}`);
  expect(Buffer.from(await other.arrayBuffer()).equals(data)).toBe(true);
  expect((await oci.req('DELETE', `/v2/mgmt3/blobs/${d}`)).status).toBe(404);
});

test('a tag moved by a second PUT points at the new manifest', async () => {
  const a = await oci.pushImage('mgmt5', 'chan', prng(100, 64));
  const b = await oci.pushImage('mgmt5', 'chan', prng(100, 65));
  expect(a.digest).not.toBe(b.digest);
  const r = await oci.req('GET', '/v2/mgmt5/manifests/chan');
  expect(r.headers.get('docker-content-digest')).toBe(b.digest);
  const hist = await s.store.meta.tagHistory('mgmt5', 'chan');
  expect(hist.map((e) => [e.oldDigest, e.newDigest])).toEqual([[a.digest, b.digest], [null, a.digest]]);
});

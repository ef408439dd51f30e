import { describe, expect, test } from 'vitest';
import { useRegistry, type TestServer } from './helpers/server.js';
import { EMPTY_CONFIG, OCI_MANIFEST, Oci, errorCode, prng, sha } from './helpers/oci.js';

let s: TestServer;
let oci: Oci;
useRegistry((r) => ({ s, oci } = r));

async function openSession(repo: string): Promise<string> {
  const r = await oci.req('POST', `/v2/${repo}/blobs/uploads/`);
  expect(r.status).toBe(202);
  const loc = r.headers.get('location')!;
  expect(loc).toMatch(new RegExp(`^/v2/${repo}/blobs/uploads/[a-f0-9-]+$`));
  expect(r.headers.get('docker-upload-uuid')).toBeTruthy();
  return loc;
}

describe('monolithic push', () => {
  test('POST ?digest= stores the blob and answers 201 with Location and digest', async () => {
    const data = prng(300_000, 7);
    const d = sha(data);
    const r = await oci.req('POST', `/v2/mono/blobs/uploads/?digest=${d}`, { body: data, headers: { 'Content-Type': 'application/octet-stream' } });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`/v2/mono/blobs/${d}`);
    expect(r.headers.get('docker-content-digest')).toBe(d);
    const g = await oci.req('GET', `/v2/mono/blobs/${d}`);
    expect(Buffer.from(await g.arrayBuffer()).equals(data)).toBe(true);
  });

  test('POST then PUT with the whole body', async () => {
    const data = prng(123_457, 8);
    const loc = await openSession('mono');
    const r = await oci.req('PUT', `${loc}?digest=${sha(data)}`, { body: data, headers: { 'Content-Type': 'application/octet-stream' } });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`/v2/mono/blobs/${sha(data)}`);
    expect((await oci.req('HEAD', `/v2/mono/blobs/${sha(data)}`)).status).toBe(200);
  });

  test('a wrong digest is DIGEST_INVALID and stores nothing', async () => {
    const data = prng(50_000, 9);
    const wrong = sha('something else');
    const r = await oci.req('POST', `/v2/mono/blobs/uploads/?digest=${wrong}`, { body: data });
    expect(r.status).toBe(400);
    expect(await errorCode(r)).toBe('DIGEST_INVALID');
    expect((await oci.req('HEAD', `/v2/mono/blobs/${wrong}`)).status).toBe(404);
    expect((await oci.req('HEAD', `/v2/mono/blobs/${sha(data)}`)).status).toBe(404);
  });

  test('malformed and unsupported digests are DIGEST_INVALID', async () => {
    for (const d of ['sha256:xyz', 'md5:abcd', 'sha256:' + 'A'.repeat(64), 'nocolon']) {
      const r = await oci.req('POST', `/v2/mono/blobs/uploads/?digest=${encodeURIComponent(d)}`, { body: 'x' });
      expect(r.status, d).toBe(400);
      expect(await errorCode(r)).toBe('DIGEST_INVALID');
    }
  });

  test('an empty blob can be pushed and pulled', async () => {
    const d = await oci.pushBlob('mono', '');
    const g = await oci.req('GET', `/v2/mono/blobs/${d}`);
    expect(g.status).toBe(200);
    expect(g.headers.get('content-length')).toBe('0');
    expect((await g.arrayBuffer()).byteLength).toBe(0);
  });
});

describe('chunked push', () => {
  test('PATCH chunks in order, GET status, PUT to finish', async () => {
    const data = prng(1_000_000, 10);
    const loc = await openSession('chunked');
    const parts = [[0, 300_000], [300_000, 650_000], [650_000, 1_000_000]] as const;
    for (const [a, b] of parts) {
      const r = await oci.req('PATCH', loc, {
        body: data.subarray(a, b),
        headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${a}-${b - 1}`, 'Content-Length': String(b - a) },
      });
      expect(r.status).toBe(202);
      expect(r.headers.get('range')).toBe(`0-${b - 1}`);
      expect(r.headers.get('location')).toBe(loc);
    }
    const st = await oci.req('GET', loc);
    expect(st.status).toBe(204);
    expect(st.headers.get('range')).toBe('0-999999');
    const fin = await oci.req('PUT', `${loc}?digest=${sha(data)}`);
    expect(fin.status).toBe(201);
    expect(fin.headers.get('docker-content-digest')).toBe(sha(data));
    const g = await oci.req('GET', `/v2/chunked/blobs/${sha(data)}`);
    expect(Buffer.from(await g.arrayBuffer()).equals(data)).toBe(true);
    // The session is gone once finished.
    expect((await oci.req('GET', loc)).status).toBe(404);
  });

  test('PATCH without Content-Range (streamed) then PUT with the last chunk', async () => {
    const data = prng(400_000, 11);
    const loc = await openSession('chunked');
    expect((await oci.req('PATCH', loc, { body: data.subarray(0, 250_000) })).status).toBe(202);
    const fin = await oci.req('PUT', `${loc}?digest=${sha(data)}`, {
      body: data.subarray(250_000),
      headers: { 'Content-Range': '250000-399999', 'Content-Length': '150000' },
    });
    expect(fin.status).toBe(201);
    const g = await oci.req('GET', `/v2/chunked/blobs/${sha(data)}`);
    expect(Buffer.from(await g.arrayBuffer()).equals(data)).toBe(true);
  });

  test('an out-of-order chunk is 416 with the current Range, and the session survives', async () => {
    const data = prng(200_000, 12);
    const loc = await openSession('chunked');
    expect((await oci.req('PATCH', loc, { body: data.subarray(0, 100_000), headers: { 'Content-Range': '0-99999' } })).status).toBe(202);
    const bad = await oci.req('PATCH', loc, { body: data.subarray(150_000), headers: { 'Content-Range': '150000-199999' } });
    expect(bad.status).toBe(416);
    expect(bad.headers.get('range')).toBe('0-99999');
    const again = await oci.req('PATCH', loc, { body: data.subarray(0, 10), headers: { 'Content-Range': '0-9' } });
    expect(again.status).toBe(416);
    expect((await oci.req('PATCH', loc, { body: data.subarray(100_000), headers: { 'Content-Range': '100000-199999' } })).status).toBe(202);
    expect((await oci.req('PUT', `${loc}?digest=${sha(data)}`)).status).toBe(201);
  });

  test('PUT with the wrong digest is DIGEST_INVALID; nothing is committed and the session is over', async () => {
    const data = prng(70_000, 13);
    const loc = await openSession('chunked');
    await oci.req('PATCH', loc, { body: data });
    const bad = await oci.req('PUT', `${loc}?digest=${sha('nope')}`);
    expect(bad.status).toBe(400);
    expect(await errorCode(bad)).toBe('DIGEST_INVALID');
    expect((await oci.req('HEAD', `/v2/chunked/blobs/${sha('nope')}`)).status).toBe(404);
    expect((await oci.req('HEAD', `/v2/chunked/blobs/${sha(data)}`)).status).toBe(404);
    expect((await oci.req('GET', loc)).status).toBe(404);
  });

  test('a session is resumable after a request broke off: Range says what arrived', async () => {
    const data = prng(3_000_000, 14);
    const loc = await openSession('chunked');
    // Send a PATCH that claims more than it sends, then cut the connection.
    const { request } = await import('node:http');
    const url = new URL(s.url + loc);
    await new Promise<void>((resolve) => {
      const req = request({ host: url.hostname, port: url.port, path: url.pathname, method: 'PATCH', headers: { 'Content-Length': String(data.byteLength) } });
      req.on('error', () => resolve());
      req.write(data.subarray(0, 1_000_000), () => setTimeout(() => { req.destroy(); resolve(); }, 200));
    });
    await new Promise((r) => setTimeout(r, 100));
    const st = await oci.req('GET', loc);
    expect(st.status).toBe(204);
    const got = Number(/^0-(\d+)$/.exec(st.headers.get('range')!)![1]) + 1;
    expect(got).toBeGreaterThan(0);
    expect(got).toBeLessThanOrEqual(1_000_000);
    const rest = await oci.req('PATCH', loc, { body: data.subarray(got), headers: { 'Content-Range': `${got}-${data.byteLength - 1}` } });
    expect(rest.status).toBe(202);
    expect((await oci.req('PUT', `${loc}?digest=${sha(data)}`)).status).toBe(201);
    const g = await oci.req('GET', `/v2/chunked/blobs/${sha(data)}`);
    expect(Buffer.from(await g.arrayBuffer()).equals(data)).toBe(true);
  });

  test('a stalled session does not hold up other pushes', async () => {
    // Session A holds a few new chunks that have not filled a batch yet, and waits for its client.
    const a = prng(700_000, 15);
    const locA = await openSession('stall');
    expect((await oci.req('PATCH', locA, { body: a.subarray(0, 600_000) })).status).toBe(202);
    // Meanwhile B is pushed whole, by both routes; both must finish.
    const b = prng(500_000, 16);
    const pushB = oci.pushBlob('stall', b);
    const c = prng(300_000, 17);
    const locC = await openSession('stall');
    const putC = oci.req('PUT', `${locC}?digest=${sha(c)}`, { body: c });
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('push held up by a stalled session')), 10_000));
    await Promise.race([Promise.all([pushB, putC]), timeout]);
    expect((await putC).status).toBe(201);
    expect((await oci.req('PATCH', locA, { body: a.subarray(600_000), headers: { 'Content-Range': '600000-699999' } })).status).toBe(202);
    expect((await oci.req('PUT', `${locA}?digest=${sha(a)}`)).status).toBe(201);
    const g = await oci.req('GET', `/v2/stall/blobs/${sha(a)}`);
    expect(Buffer.from(await g.arrayBuffer()).equals(a)).toBe(true);
  });

  test('a push that shares chunks with a stalled session gets them stored, even if that session is then cancelled', async () => {
    const a = prng(900_000, 18);
    const locA = await openSession('stall2');
    expect((await oci.req('PATCH', locA, { body: a.subarray(0, 800_000) })).status).toBe(202);
    // B starts with the same bytes, so its first chunks are the ones A holds but has not stored yet.
    const b = Buffer.concat([a.subarray(0, 800_000), prng(50_000, 19)]);
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('push held up by a stalled session')), 10_000));
    await Promise.race([oci.pushBlob('stall2', b), timeout]);
    expect((await oci.req('DELETE', locA)).status).toBe(204);
    const g = await oci.req('GET', `/v2/stall2/blobs/${sha(b)}`);
    expect(Buffer.from(await g.arrayBuffer()).equals(b)).toBe(true);
    const idx = (await s.store.blobs.index((await s.store.meta.getBlob(sha(b) as `sha256:${string}`))!)).lists()[0]!;
    const lengths = await s.store.chunks.storedLengths(Array.from({ length: idx.count }, (_, i) => idx.rawDigestAt(i)));
    lengths.forEach((n, i) => expect(n, `chunk ${i} committed`).not.toBeNull());
  });

  test('sessions do not survive a restart: they are unknown afterwards', async () => {
    const { startTestServer: start } = await import('./helpers/server.js');
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'snapyard-restart-'));
    const a = await start({ dataDir: dir });
    const r = await fetch(`${a.url}/v2/restart/blobs/uploads/`, { method: 'POST' });
    const loc = r.headers.get('location')!;
    await fetch(`${a.url}${loc}`, { method: 'PATCH', body: 'partial' });
    await a.stop();
    const b = await start({ dataDir: dir });
    const st = await fetch(`${b.url}${loc}`);
    expect(st.status).toBe(404);
    await b.stop();
  });

  test('PUT without digest is rejected', async () => {
    const loc = await openSession('chunked');
    const r = await oci.req('PUT', loc, { body: 'abc' });
    expect(r.status).toBe(400);
    expect(await errorCode(r)).toBe('DIGEST_INVALID');
  });

  test('DELETE cancels a session; it is unknown afterwards', async () => {
    const loc = await openSession('chunked');
    await oci.req('PATCH', loc, { body: 'partial' });
    expect((await oci.req('DELETE', loc)).status).toBe(204);
    const r = await oci.req('GET', loc);
    expect(r.status).toBe(404);
    expect(await errorCode(r)).toBe('BLOB_UPLOAD_UNKNOWN');
    expect((await oci.req('PATCH', loc, { body: 'x' })).status).toBe(404);
  });

  test('unknown or malformed session ids are BLOB_UPLOAD_UNKNOWN', async () => {
    for (const id of ['00000000-0000-0000-0000-000000000000', 'not..valid', 'x']) {
      const r = await oci.req('GET', `/v2/chunked/blobs/uploads/${id}`);
      expect(r.status).toBe(404);
      expect(await errorCode(r)).toBe('BLOB_UPLOAD_UNKNOWN');
    }
  });

  test('a session belongs to its repository', async () => {
    const loc = await openSession('chunked');
    const other = loc.replace('/v2/chunked/', '/v2/other/');
    expect((await oci.req('GET', other)).status).toBe(404);
  });
});

describe('cross-repository mount', () => {
  test('mount from a repository holding the blob answers 201', async () => {
    const d = await oci.pushBlob('mount-src', prng(90_000, 14));
    const r = await oci.req('POST', `/v2/mount-dst/blobs/uploads/?mount=${d}&from=mount-src`);
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe(`/v2/mount-dst/blobs/${d}`);
    expect((await oci.req('HEAD', `/v2/mount-dst/blobs/${d}`)).status).toBe(200);
  });

  test('mount of an unknown blob, or from a repository without it, falls back to a session (202)', async () => {
    const d = sha('never pushed');
    const r = await oci.req('POST', `/v2/mount-dst/blobs/uploads/?mount=${d}&from=mount-src`);
    expect(r.status).toBe(202);
    expect(r.headers.get('location')).toMatch(/^\/v2\/mount-dst\/blobs\/uploads\//);
    const known = await oci.pushBlob('mount-other', prng(1000, 15));
    const r2 = await oci.req('POST', `/v2/mount-dst2/blobs/uploads/?mount=${known}&from=mount-src`);
    expect(r2.status).toBe(202);
    expect((await oci.req('HEAD', `/v2/mount-dst2/blobs/${known}`)).status).toBe(404);
  });
});

describe('blobs are per repository', () => {
  test('a blob pushed to one repository is unknown in another', async () => {
    const d = await oci.pushBlob('repo-a', prng(5000, 16));
    const r = await oci.req('GET', `/v2/repo-b/blobs/${d}`);
    expect(r.status).toBe(404);
    expect(await errorCode(r)).toBe('BLOB_UNKNOWN');
  });
});

describe('manifest push', () => {
  test('by tag: 201, Location by digest, Docker-Content-Digest', async () => {
    const { digest, body } = await oci.pushImage('mf', 'v1', prng(20_000, 17));
    expect(digest).toBe(sha(body));
    const g = await oci.req('GET', `/v2/mf/manifests/v1`, { headers: { Accept: OCI_MANIFEST } });
    expect(g.status).toBe(200);
    expect(g.headers.get('content-type')).toBe(OCI_MANIFEST);
    expect(await g.text()).toBe(body);
  });

  test('by digest, which must match the body', async () => {
    const layer = await oci.pushBlob('mf', prng(100, 18));
    await oci.pushBlob('mf', '{}');
    const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [{ mediaType: 'application/octet-stream', digest: layer, size: 100 }] });
    const ok = await oci.req('PUT', `/v2/mf/manifests/${sha(body)}`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(ok.status).toBe(201);
    const bad = await oci.req('PUT', `/v2/mf/manifests/${sha('other')}`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(bad.status).toBe(400);
    expect(await errorCode(bad)).toBe('DIGEST_INVALID');
  });

  test('a manifest referencing an unknown blob is MANIFEST_BLOB_UNKNOWN and is not stored', async () => {
    await oci.pushBlob('mf', '{}');
    const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [{ mediaType: 'application/octet-stream', digest: sha('absent'), size: 6 }] });
    const r = await oci.req('PUT', `/v2/mf/manifests/broken`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(r.status).toBe(400);
    expect(await errorCode(r)).toBe('MANIFEST_BLOB_UNKNOWN');
    expect((await oci.req('GET', `/v2/mf/manifests/broken`)).status).toBe(404);
    expect((await oci.req('GET', `/v2/mf/manifests/${sha(body)}`)).status).toBe(404);
  });

  test('invalid JSON, wrong schema and unknown media types are MANIFEST_INVALID', async () => {
    const cases: Array<[string, string]> = [
      ['{not json', OCI_MANIFEST],
      ['[]', OCI_MANIFEST],
      [JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, layers: [] }), OCI_MANIFEST],
      [JSON.stringify({ schemaVersion: 1, config: EMPTY_CONFIG, layers: [] }), OCI_MANIFEST],
      [JSON.stringify({ schemaVersion: 2, config: { ...EMPTY_CONFIG, digest: 'sha256:zz' }, layers: [] }), OCI_MANIFEST],
      [JSON.stringify({ schemaVersion: 2, config: EMPTY_CONFIG, layers: [] }), 'text/plain'],
      [JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }), OCI_MANIFEST],
    ];
    for (const [body, ct] of cases) {
      const r = await oci.req('PUT', `/v2/mf/manifests/bad`, { body, headers: { 'Content-Type': ct } });
      expect(r.status, body).toBe(400);
      expect(await errorCode(r)).toBe('MANIFEST_INVALID');
    }
  });

  test('a body over 4 MiB is 413 and nothing is stored', async () => {
    const big = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [], annotations: { pad: 'x'.repeat(4 * 1024 * 1024) } });
    const r = await oci.req('PUT', `/v2/mf/manifests/huge`, { body: big, headers: { 'Content-Type': OCI_MANIFEST } });
    expect(r.status).toBe(413);
    expect(await errorCode(r)).toBe('SIZE_INVALID');
    expect((await oci.req('GET', `/v2/mf/manifests/huge`)).status).toBe(404);
  });

  test('an index referencing manifests in the repository', async () => {
    const a = await oci.pushImage('idx', 'a', prng(1000, 19));
    const b = await oci.pushImage('idx', 'b', prng(1000, 20));
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: OCI_MANIFEST, digest: a.digest, size: Buffer.byteLength(a.body), platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: OCI_MANIFEST, digest: b.digest, size: Buffer.byteLength(b.body) },
      ],
    };
    const { digest } = await oci.pushManifest('idx', 'multi', index, 'application/vnd.oci.image.index.v1+json');
    const g = await oci.req('GET', `/v2/idx/manifests/${digest}`);
    expect(g.headers.get('content-type')).toBe('application/vnd.oci.image.index.v1+json');
    const missing = { ...index, manifests: [{ mediaType: OCI_MANIFEST, digest: sha('nope'), size: 4 }] };
    const r = await oci.req('PUT', `/v2/idx/manifests/broken`, { body: JSON.stringify(missing), headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' } });
    expect(r.status).toBe(400);
    expect(await errorCode(r)).toBe('MANIFEST_UNKNOWN');
  });

  test('Docker v2 schema 2 manifests are accepted', async () => {
    const cfg = await oci.pushBlob('docker', '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
    const layer = await oci.pushBlob('docker', prng(3000, 21));
    const m = {
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: cfg, size: 79 },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: layer, size: 3000 }],
    };
    const { digest } = await oci.pushManifest('docker', 'latest', m, 'application/vnd.docker.distribution.manifest.v2+json');
    const g = await oci.req('GET', `/v2/docker/manifests/latest`);
    expect(g.headers.get('docker-content-digest')).toBe(digest);
    expect(g.headers.get('content-type')).toBe('application/vnd.docker.distribution.manifest.v2+json');
  });

  test('invalid tags are rejected before anything is stored', async () => {
    for (const tag of ['-lead', '.dot', 'a'.repeat(129), 'sp%20ace']) {
      const r = await oci.req('PUT', `/v2/mf/manifests/${tag}`, { body: '{}', headers: { 'Content-Type': OCI_MANIFEST } });
      expect(r.status, tag).toBe(400);
      expect(await errorCode(r)).toBe('MANIFEST_INVALID');
    }
  });
});

describe('repository names', () => {
  test('names outside the spec grammar are NAME_INVALID on every endpoint', async () => {
    const d = sha('x');
    for (const name of ['Upper', 'a//b', 'a/', '-a', 'a..b', 'a' + '/b'.repeat(200), 'a%2F..%2Fb']) {
      for (const path of [`/v2/${name}/blobs/${d}`, `/v2/${name}/blobs/uploads/`, `/v2/${name}/manifests/latest`, `/v2/${name}/tags/list`]) {
        const method = path.endsWith('uploads/') ? 'POST' : 'GET';
        const r = await oci.req(method, path);
        expect(r.status, `${method} ${path.slice(0, 60)}`).toBeGreaterThanOrEqual(400);
        expect(r.status, `${method} ${path.slice(0, 60)}`).toBeLessThan(500);
        if (r.status === 400) expect(await errorCode(r)).toBe('NAME_INVALID');
      }
    }
  });

  test('nested names with separators are fine', async () => {
    const d = await oci.pushBlob('a.b/c_d/e__f/g--h', 'nested');
    expect((await oci.req('HEAD', `/v2/a.b/c_d/e__f/g--h/blobs/${d}`)).status).toBe(200);
  });
});

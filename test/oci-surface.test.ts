/**
 * Registry surface of issue 8 (found with other OCI clients and the
 * distribution-spec conformance tool), against a real server:
 * - a manifest looked up by a reference that is not a valid tag is 404
 *   MANIFEST_UNKNOWN (GET, HEAD, DELETE); a PUT under it stays 400;
 * - manifests whose layers are non-distributable or carry `urls` are
 *   accepted without their blobs; other layers still need theirs; a
 *   non-distributable blob that was pushed is kept by gc like any other;
 * - every stable error code has its status and wire code (toOciError).
 */
import { describe, expect, test } from 'vitest';
import { useRegistry, type TestServer } from './helpers/server.js';
import { EMPTY_CONFIG, errorCode, OCI_MANIFEST, prng, sha, type Oci } from './helpers/oci.js';
import { mappingOf, toOciError } from '../server/oci-error.js';
import { ChunkCorruptError, ChunkMissingError, SnapyardError, type ErrorCode } from '../storage/errors.js';

let s: TestServer;
let oci: Oci;
useRegistry((r) => {
  s = r.s;
  oci = r.oci;
});

const BAD_TAGS = ['-leading-dash', '.dot', 'a'.repeat(129), 'sp%20ace', '%C3%A9t%C3%A9', 'tab%09x', 'semi;colon'];

describe('manifest references that are not valid tags', () => {
  test('GET and HEAD answer 404 MANIFEST_UNKNOWN, DELETE too; PUT stays 400 MANIFEST_INVALID', async () => {
    await oci.pushImage('surface/tags', 'good', prng(1000, 1));
    for (const tag of BAD_TAGS) {
      const get = await oci.req('GET', `/v2/surface/tags/manifests/${tag}`);
      expect(get.status, tag).toBe(404);
      expect(await errorCode(get)).toBe('MANIFEST_UNKNOWN');
      const head = await oci.req('HEAD', `/v2/surface/tags/manifests/${tag}`);
      expect(head.status, tag).toBe(404);
      expect(await head.text()).toBe('');
      const del = await oci.req('DELETE', `/v2/surface/tags/manifests/${tag}`);
      expect(del.status, tag).toBe(404);
      expect(await errorCode(del)).toBe('MANIFEST_UNKNOWN');
      const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [] });
      const put = await oci.req('PUT', `/v2/surface/tags/manifests/${tag}`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
      expect(put.status, tag).toBe(400);
      expect(await errorCode(put)).toBe('MANIFEST_INVALID');
    }
    // The good tag is untouched, and a malformed digest is still a 400 DIGEST_INVALID.
    expect((await oci.req('GET', '/v2/surface/tags/manifests/good')).status).toBe(200);
    const badDigest = await oci.req('GET', '/v2/surface/tags/manifests/sha256:abc');
    expect(badDigest.status).toBe(400);
    expect(await errorCode(badDigest)).toBe('DIGEST_INVALID');
  });
});

describe('non-distributable layers and layers with urls', () => {
  const missing = (n: number) => sha(`never pushed ${n}`);
  const manifest = (layers: unknown[], mediaType = OCI_MANIFEST) => JSON.stringify({ schemaVersion: 2, mediaType, config: EMPTY_CONFIG, layers });

  test('are accepted without their blobs (OCI and docker media types), and the manifest reads back byte-exact', async () => {
    await oci.pushBlob('surface/nd', '{}');
    const cases: Array<{ tag: string; body: string; type?: string }> = [
      { tag: 'nd-tar', body: manifest([{ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar', digest: missing(1), size: 10 }]) },
      { tag: 'nd-gzip', body: manifest([{ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: missing(2), size: 10, urls: ['https://example.com/layer'] }]) },
      { tag: 'urls', body: manifest([{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: missing(3), size: 10, urls: ['https://example.com/a', 'https://mirror.example.com/a'] }]) },
      {
        tag: 'docker-foreign',
        type: 'application/vnd.docker.distribution.manifest.v2+json',
        body: JSON.stringify({
          schemaVersion: 2,
          mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
          config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: sha('{}'), size: 2 },
          layers: [{ mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: missing(4), size: 10, urls: ['https://example.com/w'] }],
        }),
      },
    ];
    for (const c of cases) {
      const put = await oci.req('PUT', `/v2/surface/nd/manifests/${c.tag}`, { body: c.body, headers: { 'Content-Type': c.type ?? OCI_MANIFEST } });
      expect(put.status, `${c.tag}: ${await put.clone().text()}`).toBe(201);
      const get = await oci.req('GET', `/v2/surface/nd/manifests/${c.tag}`);
      expect(get.status).toBe(200);
      expect(await get.text()).toBe(c.body);
    }
  });

  test('an ordinary layer (or the config) still needs its blob: 400 MANIFEST_BLOB_UNKNOWN, also next to external layers', async () => {
    await oci.pushBlob('surface/nd2', '{}');
    const bodies = [
      manifest([{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: missing(5), size: 10 }]),
      manifest([{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: missing(6), size: 10, urls: [] }]),
      manifest([
        { mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar', digest: missing(7), size: 10 },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: missing(8), size: 10 },
      ]),
      // The same digest as a non-distributable and as an ordinary layer: required.
      manifest([
        { mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar', digest: missing(9), size: 10 },
        { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: missing(9), size: 10 },
      ]),
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...EMPTY_CONFIG, digest: missing(10), urls: ['https://example.com/c'] }, layers: [] }),
    ];
    for (const body of bodies) {
      const put = await oci.req('PUT', '/v2/surface/nd2/manifests/t', { body, headers: { 'Content-Type': OCI_MANIFEST } });
      expect(put.status, body).toBe(400);
      expect(await errorCode(put)).toBe('MANIFEST_BLOB_UNKNOWN');
    }
    expect((await oci.req('GET', '/v2/surface/nd2/manifests/t')).status).toBe(404);
  });

  test('a non-distributable layer that was pushed is referenced like any other: gc keeps it', async () => {
    const layer = prng(50_000, 9);
    await oci.pushBlob('surface/nd3', '{}');
    const digest = await oci.pushBlob('surface/nd3', layer);
    const body = manifest([{ mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar', digest, size: layer.byteLength }]);
    expect((await oci.req('PUT', '/v2/surface/nd3/manifests/kept', { body, headers: { 'Content-Type': OCI_MANIFEST } })).status).toBe(201);
    const gc = await fetch(`${s.url}/snapyard/v1/_admin/gc`, { method: 'POST', body: JSON.stringify({ graceSeconds: 0 }), headers: { 'content-type': 'application/json' } });
    expect(gc.status).toBe(200);
    const get = await oci.req('GET', `/v2/surface/nd3/blobs/${digest}`);
    expect(get.status).toBe(200);
    expect(Buffer.from(await get.arrayBuffer()).equals(layer)).toBe(true);
  });
});

describe('stable error codes on the wire', () => {
  const expected: Array<[ErrorCode, number, string]> = [
    ['INVALID_ARGUMENT', 400, 'UNSUPPORTED'],
    ['DIGEST_INVALID', 400, 'DIGEST_INVALID'],
    ['DIGEST_MISMATCH', 400, 'DIGEST_INVALID'],
    ['SIZE_INVALID', 400, 'SIZE_INVALID'],
    ['RANGE_INVALID', 416, 'RANGE_INVALID'],
    ['INDEX_INVALID', 400, 'INDEX_INVALID'],
    ['QCOW2_INVALID', 400, 'QCOW2_INVALID'],
    ['BLOB_UNKNOWN', 404, 'BLOB_UNKNOWN'],
    ['NOT_FOUND', 404, 'NOT_FOUND'],
    ['CONFLICT', 409, 'CONFLICT'],
    ['IN_USE', 405, 'UNSUPPORTED'],
    ['LIMIT_EXCEEDED', 429, 'TOOMANYREQUESTS'],
    ['BUSY', 503, 'UNAVAILABLE'],
    ['STORAGE_FULL', 507, 'STORAGE_FULL'],
    ['CHUNK_MISSING', 500, 'CHUNK_MISSING'],
    ['CHUNK_CORRUPT', 500, 'CHUNK_CORRUPT'],
    ['REGISTRY_ERROR', 502, 'INTERNAL_ERROR'],
    ['REGISTRY_UNREACHABLE', 502, 'INTERNAL_ERROR'],
    ['INTERNAL', 500, 'INTERNAL_ERROR'],
  ];

  test('each code maps to its status and code (NOT_FOUND, CONFLICT and CHUNK_MISSING were all 500 INTERNAL_ERROR)', () => {
    for (const [code, status, wire] of expected) {
      const e = toOciError(new SnapyardError(code, `a ${code} error`));
      expect([e.status, e.code], code).toEqual([status, wire]);
      expect(mappingOf(code).status).toBe(status);
      expect(JSON.parse(e.body()).errors[0].message).toContain(`a ${code} error`);
    }
  });

  test('the error classes, limits and a raw full disk map the same way', () => {
    expect(toOciError(new ChunkMissingError('sha256:00')).status).toBe(500);
    expect(toOciError(new ChunkMissingError('sha256:00')).message).toMatch(/verify/);
    expect(toOciError(new ChunkCorruptError('sha256:00', 'bad')).code).toBe('CHUNK_CORRUPT');
    const limited = toOciError(new SnapyardError('LIMIT_EXCEEDED', 'too many sessions', { detail: { retryAfter: 7 } }));
    expect([limited.status, limited.headers['Retry-After']]).toEqual([429, '7']);
    expect(toOciError(new SnapyardError('LIMIT_EXCEEDED', 'body too large', { detail: { status: 413 } })).status).toBe(413);
    expect(toOciError(new SnapyardError('BUSY', 'busy')).headers['Retry-After']).toBeDefined();
    const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
    expect([toOciError(enospc).status, toOciError(enospc).code]).toEqual([507, 'STORAGE_FULL']);
    expect(toOciError(new Error('boom')).status).toBe(500);
  });
});

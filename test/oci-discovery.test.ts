import { beforeAll, describe, expect, test } from 'vitest';
import { useRegistry } from './helpers/server.js';
import { EMPTY_CONFIG, OCI_INDEX, OCI_MANIFEST, Oci, errorCode, prng } from './helpers/oci.js';

let oci: Oci;
useRegistry((r) => ({ oci } = r));

describe('tags list', () => {
  const tags = ['base-v1', 'games-v1', 'games-v2', 'latest', 'A1', 'prod_1', 'z.9'];
  beforeAll(async () => {
    const { body } = await oci.pushImage('tags/repo', tags[0]!, prng(100, 41));
    for (const t of tags.slice(1)) await oci.pushManifest('tags/repo', t, body);
  });

  test('lists all tags in lexical order', async () => {
    const r = await oci.req('GET', '/v2/tags/repo/tags/list');
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ name: 'tags/repo', tags: [...tags].sort() });
    expect(r.headers.get('link')).toBeNull();
  });

  test('paginates with n and last, and a Link header to the next page', async () => {
    const seen: string[] = [];
    let path: string | null = '/v2/tags/repo/tags/list?n=3';
    let pages = 0;
    while (path) {
      const r = await oci.req('GET', path);
      expect(r.status).toBe(200);
      const body = (await r.json()) as { tags: string[] };
      expect(body.tags.length).toBeLessThanOrEqual(3);
      seen.push(...body.tags);
      const link = r.headers.get('link');
      path = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1]! : null;
      pages++;
    }
    expect(seen).toEqual([...tags].sort());
    expect(pages).toBe(3);
    const after = await oci.req('GET', '/v2/tags/repo/tags/list?n=2&last=games-v1');
    expect(((await after.json()) as { tags: string[] }).tags).toEqual(['games-v2', 'latest']);
    const zero = await oci.req('GET', '/v2/tags/repo/tags/list?n=0');
    expect(((await zero.json()) as { tags: string[] }).tags).toEqual([]);
    const tail = await oci.req('GET', '/v2/tags/repo/tags/list?last=prod_1');
    expect(((await tail.json()) as { tags: string[] }).tags).toEqual(['z.9']);
  });

  test('unknown repository is NAME_UNKNOWN; a bad n is rejected', async () => {
    const r = await oci.req('GET', '/v2/tags/absent/tags/list');
    expect(r.status).toBe(404);
    expect(await errorCode(r)).toBe('NAME_UNKNOWN');
    expect((await oci.req('GET', '/v2/tags/repo/tags/list?n=-1')).status).toBe(400);
  });
});

describe('referrers', () => {
  let subject: { digest: string; body: string };
  const refs: Record<string, string> = {};
  beforeAll(async () => {
    subject = await oci.pushImage('ref/repo', 'base', prng(500, 51));
    await oci.pushBlob('ref/repo', '{}');
    for (const [name, type] of [['sig', 'application/vnd.example.signature'], ['sbom', 'application/vnd.example.sbom'], ['sig2', 'application/vnd.example.signature']] as const) {
      const layer = await oci.pushBlob('ref/repo', `${name} content`);
      const m = {
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: type,
        config: EMPTY_CONFIG,
        layers: [{ mediaType: 'application/octet-stream', digest: layer, size: Buffer.byteLength(`${name} content`) }],
        subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: Buffer.byteLength(subject.body) },
        annotations: { 'org.example.name': name },
      };
      const { digest, res } = await oci.pushManifest('ref/repo', refs[name] = `${name}-tag`, m);
      expect(res.headers.get('oci-subject')).toBe(subject.digest);
      refs[name] = digest;
    }
  });

  test('lists every manifest whose subject is the digest, as an image index', async () => {
    const r = await oci.req('GET', `/v2/ref/repo/referrers/${subject.digest}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe(OCI_INDEX);
    expect(r.headers.get('oci-filters-applied')).toBeNull();
    const idx = (await r.json()) as { schemaVersion: number; mediaType: string; manifests: Array<Record<string, unknown>> };
    expect(idx.schemaVersion).toBe(2);
    expect(idx.mediaType).toBe(OCI_INDEX);
    expect(idx.manifests.map((m) => m.digest).sort()).toEqual(Object.values(refs).sort());
    const sig = idx.manifests.find((m) => m.digest === refs.sig)!;
    expect(sig.artifactType).toBe('application/vnd.example.signature');
    expect(sig.mediaType).toBe(OCI_MANIFEST);
    expect(sig.annotations).toEqual({ 'org.example.name': 'sig' });
    expect(typeof sig.size).toBe('number');
  });

  test('filters by artifactType and says so', async () => {
    const r = await oci.req('GET', `/v2/ref/repo/referrers/${subject.digest}?artifactType=${encodeURIComponent('application/vnd.example.signature')}`);
    expect(r.headers.get('oci-filters-applied')).toBe('artifactType');
    const idx = (await r.json()) as { manifests: Array<{ digest: string }> };
    expect(idx.manifests.map((m) => m.digest).sort()).toEqual([refs.sig, refs.sig2].sort());
  });

  test('a manifest may name a subject that does not exist (yet); an unknown digest has no referrers', async () => {
    const ghost = 'sha256:' + 'ab'.repeat(32);
    const layer = await oci.pushBlob('ref/repo', 'ghost');
    const m = { schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/x-ghost', config: EMPTY_CONFIG, layers: [{ mediaType: 'application/octet-stream', digest: layer, size: 5 }], subject: { mediaType: OCI_MANIFEST, digest: ghost, size: 10 } };
    const { res } = await oci.pushManifest('ref/repo', 'ghost', m);
    expect(res.headers.get('oci-subject')).toBe(ghost);
    const r = await oci.req('GET', `/v2/ref/repo/referrers/${ghost}`);
    expect(((await r.json()) as { manifests: unknown[] }).manifests).toHaveLength(1);
    const none = await oci.req('GET', `/v2/ref/repo/referrers/sha256:${'cd'.repeat(32)}`);
    expect(none.status).toBe(200);
    expect(((await none.json()) as { manifests: unknown[] }).manifests).toEqual([]);
  });

  test('an image manifest without artifactType reports its config media type', async () => {
    const cfg = '{"architecture":"amd64","os":"linux"}';
    const cfgDigest = await oci.pushBlob('ref/repo', cfg);
    const layer = await oci.pushBlob('ref/repo', 'img');
    const m = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfgDigest, size: cfg.length },
      layers: [{ mediaType: 'application/octet-stream', digest: layer, size: 3 }],
      subject: { mediaType: OCI_MANIFEST, digest: subject.digest, size: Buffer.byteLength(subject.body) },
    };
    const { digest } = await oci.pushManifest('ref/repo', 'imgref', m);
    const r = await oci.req('GET', `/v2/ref/repo/referrers/${subject.digest}?artifactType=${encodeURIComponent('application/vnd.oci.image.config.v1+json')}`);
    const idx = (await r.json()) as { manifests: Array<{ digest: string }> };
    expect(idx.manifests.map((x) => x.digest)).toEqual([digest]);
  });

  test('a malformed digest is 400', async () => {
    const r = await oci.req('GET', `/v2/ref/repo/referrers/sha256:nothex`);
    expect(r.status).toBe(400);
    expect(await errorCode(r)).toBe('DIGEST_INVALID');
  });
});

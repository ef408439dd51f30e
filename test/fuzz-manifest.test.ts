/**
 * Hostile manifests PUT to a real server (issue 8): mutants of valid OCI
 * image manifests, OCI indexes, docker v2 manifests and manifest lists, and
 * an artifact with a subject (wrong types, bad digests, unicode, deleted and
 * added keys, __proto__, huge arrays, deep nesting, duplicate keys,
 * truncation, byte flips, BOMs, mismatched Content-Types).
 *
 * Every answer is 201 or a 4xx in the OCI error format, within 5 s; an
 * accepted manifest reads back byte-exact by its digest; what was stored
 * before is unharmed (the original image's manifest, tag and blob read back
 * byte-exact throughout), and memory stays bounded.
 */
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { useRegistry, type TestServer } from './helpers/server.js';
import { EMPTY_CONFIG, errorCode, OCI_INDEX, OCI_MANIFEST, prng, sha, type Oci } from './helpers/oci.js';
import { jsonMutationArb, mutateJson, mutateText, textMutationArb } from './helpers/json-mutate.js';

let s: TestServer;
let oci: Oci;
useRegistry((r) => {
  s = r.s;
  oci = r.oci;
});

const RUNS = Number(process.env.FUZZ_RUNS ?? 2000);
const FC_SEED = Number(process.env.FUZZ_SEED ?? 8_8);
const REPO = 'fuzz/manifests';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, 'application/json', 'text/plain', ''];

async function checkOriginal(orig: { digest: string; body: string; layer: Buffer; layerDigest: string }): Promise<void> {
  const m = await oci.req('GET', `/v2/${REPO}/manifests/orig`);
  expect(m.status).toBe(200);
  expect(m.headers.get('docker-content-digest')).toBe(orig.digest);
  expect(await m.text()).toBe(orig.body);
  const b = await oci.req('GET', `/v2/${REPO}/blobs/${orig.layerDigest}`);
  expect(b.status).toBe(200);
  expect(Buffer.from(await b.arrayBuffer()).equals(orig.layer)).toBe(true);
}

describe('manifest PUT under hostile bodies', () => {
  test('only 201 or a 4xx OCI error, accepted ones read back exactly, nothing stored is harmed', async () => {
    const layer = prng(70_000, 3);
    const orig = { ...(await oci.pushImage(REPO, 'orig', layer)), layer };
    const desc = { mediaType: OCI_MANIFEST, digest: orig.digest, size: Buffer.byteLength(orig.body) };
    const bases: Array<{ type: string; doc: unknown }> = [
      { type: OCI_MANIFEST, doc: JSON.parse(orig.body) },
      { type: OCI_INDEX, doc: { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...desc, platform: { os: 'linux', architecture: 'amd64' } }], annotations: { a: 'b' } } },
      { type: DOCKER_MANIFEST, doc: { schemaVersion: 2, mediaType: DOCKER_MANIFEST, config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: sha('{}'), size: 2 }, layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: orig.layerDigest, size: layer.byteLength }] } },
      { type: DOCKER_LIST, doc: { schemaVersion: 2, mediaType: DOCKER_LIST, manifests: [{ ...desc, mediaType: DOCKER_MANIFEST }] } },
      { type: OCI_MANIFEST, doc: { schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/x-fuzz', config: EMPTY_CONFIG, layers: [{ mediaType: 'application/octet-stream', digest: orig.layerDigest, size: layer.byteLength, urls: ['https://example.com/x'] }], subject: desc } },
    ];
    const counts = { cases: 0, accepted: 0, refused: 0, byStatus: new Map<number, number>() };
    const rss0 = process.memoryUsage().rss;
    let peak = rss0;
    const t0 = Date.now();
    const arb = fc.record({
      base: fc.nat({ max: bases.length - 1 }),
      json: fc.array(jsonMutationArb, { minLength: 0, maxLength: 3 }),
      text: fc.option(textMutationArb, { freq: 4 }),
      type: fc.option(fc.constantFrom(...TYPES), { freq: 2 }),
      byDigest: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(arb, async (c) => {
        const base = bases[c.base]!;
        let body: Buffer = Buffer.from(JSON.stringify(mutateJson(base.doc as never, c.json)));
        if (c.text) body = mutateText(body, c.text);
        const type = c.type ?? base.type;
        const ref = c.byDigest ? sha(body) : 'fuzzed';
        const headers: Record<string, string> = type ? { 'Content-Type': type } : {};
        const r = await fetch(`${s.url}/v2/${REPO}/manifests/${ref}`, { method: 'PUT', body, headers, signal: AbortSignal.timeout(5_000) });
        const text = await r.text();
        counts.cases++;
        counts.byStatus.set(r.status, (counts.byStatus.get(r.status) ?? 0) + 1);
        peak = Math.max(peak, process.memoryUsage().rss);
        if (r.status === 201) {
          counts.accepted++;
          const digest = r.headers.get('docker-content-digest')!;
          expect(digest).toBe(sha(body));
          const back = await oci.req('GET', `/v2/${REPO}/manifests/${digest}`);
          expect(back.status).toBe(200);
          expect(Buffer.from(await back.arrayBuffer()).equals(body)).toBe(true);
        } else {
          counts.refused++;
          expect(r.status, `${r.status} ${text.slice(0, 300)}`).toBeGreaterThanOrEqual(400);
          expect(r.status, `${r.status} ${text.slice(0, 300)}`).toBeLessThan(500);
          const err = JSON.parse(text) as { errors: Array<{ code: string; message: string }> };
          expect(err.errors[0]!.code).toMatch(/^[A-Z_]+$/);
          expect(typeof err.errors[0]!.message).toBe('string');
        }
        if (counts.cases % 250 === 0) await checkOriginal(orig);
      }),
      { numRuns: RUNS, seed: FC_SEED, endOnFailure: true },
    );
    await checkOriginal(orig);
    // The tag the fuzz PUTs moved still names a manifest that reads back.
    const tags = (await (await oci.req('GET', `/v2/${REPO}/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).toContain('orig');
    const growth = (peak - rss0) / 2 ** 20;
    console.log(`fuzz-manifest: ${counts.cases} PUTs in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${counts.accepted} accepted, ${counts.refused} refused (${[...counts.byStatus].map(([k, v]) => `${k}: ${v}`).join(', ')}); peak RSS growth ${growth.toFixed(0)} MiB`);
    expect(counts.accepted).toBeGreaterThan(0);
    expect(counts.refused).toBeGreaterThan(0);
    expect(growth).toBeLessThan(512);
  });

  test('a manifest nested deeper than 64 levels is refused before it is parsed (400); 60 levels of an unknown field are fine', async () => {
    await oci.pushBlob('fuzz/deep', '{}');
    const base = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [] });
    const nested = (depth: number) => `{"extra":${'['.repeat(depth - 1)}"[[{{ brackets in a string"${']'.repeat(depth - 1)},${base.slice(1)}`;
    const ok = await oci.req('PUT', '/v2/fuzz/deep/manifests/ok', { body: nested(60), headers: { 'Content-Type': OCI_MANIFEST } });
    expect(ok.status).toBe(201);
    for (const depth of [65, 1000, 1_000_000]) {
      const r = await oci.req('PUT', '/v2/fuzz/deep/manifests/deep', { body: nested(depth), headers: { 'Content-Type': OCI_MANIFEST } });
      expect(r.status, String(depth)).toBe(400);
      expect(await errorCode(r)).toBe('MANIFEST_INVALID');
    }
    expect((await oci.req('GET', '/v2/fuzz/deep/manifests/deep')).status).toBe(404);
  });
});

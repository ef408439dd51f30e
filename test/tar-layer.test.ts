/**
 * Seed-style images: a qcow2 wrapped as the member of an uncompressed tar
 * layer, pushed by skopeo through the plain OCI upload path, is chunked over
 * the member's guest view (the tar header, padding and trailer as residue):
 * the second of two related images grows the store about as much as
 * `snapyard push` of the bare qcow2 does, and the layer is served byte-exact,
 * whole and in ranges; so is a layer as image builders write it (directory
 * entries, a pax header for a long path, a small file before the image). A
 * gzip layer is byte-chunked and served byte-exact too.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cleanEnv, runCli } from './helpers/cli.js';
import { compressLayer, sha256, skopeoIn, tarOf, writeLayout, type Compression, type TarMember } from './helpers/old-images.js';
import { makeBaseImage, makeShuffled, makeVariant } from './helpers/qcow2-fixtures.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-tar-layer-');
let viaSkopeo: TestServer;
let viaPush: TestServer;
let work: string;
let base: Buffer;
let variant: Buffer;
let basePath: string;
let variantPath: string;
let skopeo: (...args: string[]) => Promise<string>;

beforeAll(async () => {
  work = tmp();
  [viaSkopeo, viaPush] = await Promise.all([startTestServer(), startTestServer()]);
  basePath = await makeBaseImage(work);
  // A variant whose clusters qemu laid out in another order: only the guest view dedups it against the base.
  variantPath = await makeShuffled(work, await makeVariant(work, basePath, 'games'), { name: 'games-shuffled' });
  [base, variant] = await Promise.all([readFile(basePath), readFile(variantPath)]);
  skopeo = await skopeoIn(work);
}, 180_000);

afterAll(async () => {
  await Promise.all([viaSkopeo?.stop(), viaPush?.stop()]);
});

/** skopeo copy of a one-layer image (the tar around `members`) to the server; returns the layer's bytes. */
async function skopeoLayer(s: TestServer, tag: string, members: TarMember[], compression: Compression = 'none'): Promise<Buffer> {
  const dir = tmp();
  const tar = await tarOf(members);
  await writeLayout(dir, [{ tag, tar, compression }]);
  await skopeo('copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-no-creds', `oci:${dir}:${tag}`, `docker://${s.host}/seed/win98:${tag}`);
  return compressLayer(tar, compression);
}

async function getBlob(s: TestServer, digest: string, range?: string): Promise<{ status: number; body: Buffer }> {
  const r = await fetch(`${s.url}/v2/seed/win98/blobs/${digest}`, range ? { headers: { range } } : {});
  return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
}

async function expectServed(s: TestServer, layer: Buffer): Promise<void> {
  const d = sha256(layer);
  const whole = await getBlob(s, d);
  expect(whole.status).toBe(200);
  expect(whole.body.equals(layer)).toBe(true);
  // Ranges across the tar header / qcow2 boundary, inside the image, and over the padding and trailer.
  const n = layer.length;
  for (const [a, b] of [[0, 511], [500, 530], [511, 70_000], [1_000_000, 1_300_000], [n - 3000, n - 1], [n - 1030, n - 1000]] as const) {
    const r = await getBlob(s, d, `bytes=${a}-${b}`);
    expect(r.status, `${a}-${b}`).toBe(206);
    expect(r.body.equals(layer.subarray(a, b + 1)), `bytes ${a}-${b}`).toBe(true);
  }
}

describe('uncompressed tar layers whose member is a qcow2', () => {
  test('the second image grows the store at most 1.5x what snapyard push of it adds; served byte-exact', async () => {
    const stored = async (s: TestServer) => (await s.store.chunks.stats()).stored;
    const l1 = await skopeoLayer(viaSkopeo, 'v1', [{ name: 'snapshot.qcow2', data: base }]);
    const mid = await stored(viaSkopeo);
    const l2 = await skopeoLayer(viaSkopeo, 'v2', [{ name: 'snapshot.qcow2', data: variant }]);
    const tarGrowth = (await stored(viaSkopeo)) - mid;

    const env = cleanEnv({ SNAPYARD_CACHE: join(work, 'cache') });
    for (const [tag, file] of [['v1', basePath], ['v2', variantPath]] as const) {
      if (tag === 'v2') var before = await stored(viaPush);
      const r = await runCli(['push', `seed/win98:${tag}`, file, '--registry', viaPush.url], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    const pushGrowth = (await stored(viaPush)) - before!;
    console.log(`store growth of v2: skopeo tar layer ${tarGrowth} bytes, snapyard push ${pushGrowth} bytes (${(tarGrowth / pushGrowth).toFixed(2)}x); layer ${l2.length} bytes`);
    expect(pushGrowth).toBeGreaterThan(0);
    expect(tarGrowth).toBeLessThanOrEqual(1.5 * pushGrowth);
    await expectServed(viaSkopeo, l1);
    await expectServed(viaSkopeo, l2);
  });

  test('a layer with directory entries, a pax long path and a small file before the image dedups by guest view too; byte-exact', async () => {
    // After the first test the store holds the variant's guest data: only the tar's own bytes and the image's metadata are new.
    const before = (await viaSkopeo.store.chunks.stats()).stored;
    const long = `emulator-snapshot/${'win98-games-'.repeat(10)}v2.qcow2`;
    const layer = await skopeoLayer(viaSkopeo, 'built', [
      { name: 'emulator-snapshot/', data: Buffer.alloc(0), directory: true },
      { name: 'emulator-snapshot/README', data: Buffer.from('seed image\n') },
      { name: long, data: variant },
    ]);
    expect(layer.subarray(0, 4096).includes(Buffer.from('path='))).toBe(true);
    const growth = (await viaSkopeo.store.chunks.stats()).stored - before;
    console.log(`store growth of the builder-style layer: ${growth} bytes for a ${layer.length}-byte layer`);
    expect(growth).toBeLessThan(layer.length / 20);
    await expectServed(viaSkopeo, layer);
  });

  test('a gzip layer, and a tar whose image lies past the first 64 KiB, are stored as they are, byte-exact', async () => {
    const gz = await skopeoLayer(viaSkopeo, 'gz', [{ name: 'snapshot.qcow2', data: variant }], 'gzip');
    await expectServed(viaSkopeo, gz);
    const far = await skopeoLayer(viaSkopeo, 'far', [{ name: 'padding.bin', data: Buffer.alloc(100_000, 7) }, { name: 'snapshot.qcow2', data: base }]);
    await expectServed(viaSkopeo, far);
  });

  test('a tar member that claims more bytes than the blob has is byte-chunked, byte-exact', async () => {
    const dir = tmp();
    const tar = await tarOf([{ name: 'snapshot.qcow2', data: base, claimedSize: base.length + 10_000_000 }]);
    await writeLayout(dir, [{ tag: 'liar', tar, compression: 'none' }]);
    await skopeo('copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-no-creds', `oci:${dir}:liar`, `docker://${viaSkopeo.host}/seed/win98:liar`);
    await expectServed(viaSkopeo, tar);
  });
});

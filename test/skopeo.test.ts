/**
 * End-to-end with a real client: skopeo pushes qcow2 disks wrapped in OCI
 * image layouts to a real in-process registry, pulls them back (by tag and by
 * digest) and inspects them; layer bytes and manifest digests must survive
 * untouched. Two related full images pushed one after the other must share
 * most of their chunks in the store.
 *
 * skopeo is required: when it is missing, every test here fails (no skip).
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { makeBaseImage, makeVariant, runTool } from './helpers/qcow2-fixtures.js';
import { ChunkCodec } from '../storage/chunks/chunk-codec.js';
import type { Digest } from '../storage/digest.js';

const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const MT_INDEX = 'application/vnd.oci.image.index.v1+json';
const MT_EMPTY = 'application/vnd.oci.empty.v1+json';
const EMPTY_DIGEST = 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a';
const ARTIFACT_TYPE = 'application/vnd.snapyard.qcow2';
const MT_QCOW2 = 'application/vnd.snapyard.qcow2.v1';
const MT_LAYER_TAR = 'application/vnd.oci.image.layer.v1.tar';
const MT_CONFIG = 'application/vnd.oci.image.config.v1+json';

const sha256 = (b: Uint8Array): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hex = (d: string) => d.replace(/^sha256:/, '');

let s: TestServer;
let work: string;
let basePath: string;
let variantPath: string;
let baseBytes: Buffer;
let variantBytes: Buffer;
let skopeoGlobal: string[];
let skopeoEnv: NodeJS.ProcessEnv;

/** SNAPYARD_SKOPEO_DEBUG=1 runs skopeo with --debug and prints its log (every HTTP exchange). */
const DEBUG = process.env.SNAPYARD_SKOPEO_DEBUG === '1';

/** Runs skopeo with a private policy, registries.conf and tmpdir (nothing from the machine's config). */
async function skopeo(...args: string[]): Promise<string> {
  const { stdout, stderr } = await runTool('skopeo', [...skopeoGlobal, ...(DEBUG ? ['--debug'] : []), ...args], { env: skopeoEnv });
  if (DEBUG) console.log(`skopeo ${args.join(' ')}\n${stderr}`);
  return stdout;
}

interface Layout {
  dir: string;
  tag: string;
  manifest: Buffer;
  manifestDigest: Digest;
  layerDigest: Digest;
  configDigest: Digest;
}

async function putBlob(dir: string, bytes: Uint8Array): Promise<Digest> {
  const d = sha256(bytes);
  await writeFile(join(dir, 'blobs', 'sha256', hex(d)), bytes);
  return d;
}

/**
 * Writes an OCI image layout holding one manifest that wraps `disk`:
 * 'artifact' = OCI 1.1 artifact (artifactType, empty config, qcow2 layer type);
 * 'image' = image-shaped (image config, a tar layer media type around the qcow2).
 */
async function writeLayout(dir: string, tag: string, disk: Buffer, kind: 'artifact' | 'image'): Promise<Layout> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layerDigest = await putBlob(dir, disk);
  let manifestObj: Record<string, unknown>;
  let configDigest: Digest;
  if (kind === 'artifact') {
    configDigest = await putBlob(dir, Buffer.from('{}'));
    expect(configDigest).toBe(EMPTY_DIGEST);
    manifestObj = {
      schemaVersion: 2,
      mediaType: MT_MANIFEST,
      artifactType: ARTIFACT_TYPE,
      config: { mediaType: MT_EMPTY, digest: EMPTY_DIGEST, size: 2, data: 'e30=' },
      layers: [{ mediaType: MT_QCOW2, digest: layerDigest, size: disk.length, annotations: { 'org.opencontainers.image.title': `${tag}.qcow2` } }],
      annotations: { 'org.opencontainers.image.created': '1998-06-25T00:00:00Z' },
    };
  } else {
    const config = Buffer.from(
      JSON.stringify({
        created: '1998-06-25T00:00:00Z',
        architecture: 'amd64',
        os: 'linux',
        config: {},
        rootfs: { type: 'layers', diff_ids: [layerDigest] },
        history: [{ created: '1998-06-25T00:00:00Z', created_by: 'snapyard test: qcow2 disk' }],
      }),
    );
    configDigest = await putBlob(dir, config);
    manifestObj = {
      schemaVersion: 2,
      mediaType: MT_MANIFEST,
      config: { mediaType: MT_CONFIG, digest: configDigest, size: config.length },
      layers: [{ mediaType: MT_LAYER_TAR, digest: layerDigest, size: disk.length }],
    };
  }
  const manifest = Buffer.from(JSON.stringify(manifestObj, null, 2));
  const manifestDigest = await putBlob(dir, manifest);
  const index = {
    schemaVersion: 2,
    mediaType: MT_INDEX,
    manifests: [{ mediaType: MT_MANIFEST, digest: manifestDigest, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': tag } }],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  return { dir, tag, manifest, manifestDigest, layerDigest, configDigest };
}

/** skopeo copy OCI layout -> registry, keeping every byte. */
async function push(layout: Layout, repo: string): Promise<void> {
  await skopeo('copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-no-creds', `oci:${layout.dir}:${layout.tag}`, `docker://${s.host}/${repo}:${layout.tag}`);
}

/** skopeo copy registry -> a fresh OCI layout; returns the layout dir. */
async function pull(ref: string, outDir: string, tag: string): Promise<string> {
  await skopeo('copy', '--preserve-digests', '--src-tls-verify=false', '--src-no-creds', '--dest-oci-accept-uncompressed-layers', `docker://${s.host}/${ref}`, `oci:${outDir}:${tag}`);
  return outDir;
}

/** The manifest a pulled layout holds under `tag`: its digest and bytes. */
async function pulledManifest(dir: string, tag: string): Promise<{ digest: Digest; bytes: Buffer; json: { layers: Array<{ digest: string; mediaType: string; size: number }>; config: { digest: string } } }> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: Digest; annotations?: Record<string, string> }> };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  expect(entry, `tag ${tag} in ${dir}/index.json`).toBeDefined();
  const bytes = await readFile(join(dir, 'blobs', 'sha256', hex(entry!.digest)));
  expect(sha256(bytes)).toBe(entry!.digest);
  return { digest: entry!.digest, bytes, json: JSON.parse(bytes.toString('utf8')) };
}

async function expectRoundTrip(layout: Layout, repo: string, disk: Buffer): Promise<void> {
  await push(layout, repo);

  // The registry serves the manifest bytes exactly as pushed.
  const raw = await skopeo('inspect', '--raw', '--tls-verify=false', '--no-creds', `docker://${s.host}/${repo}:${layout.tag}`);
  expect(Buffer.from(raw).equals(layout.manifest), 'skopeo inspect --raw returns the pushed manifest bytes').toBe(true);
  const head = await fetch(`${s.url}/v2/${repo}/manifests/${layout.tag}`, { method: 'HEAD', headers: { Accept: MT_MANIFEST } });
  expect(head.status).toBe(200);
  expect(head.headers.get('docker-content-digest')).toBe(layout.manifestDigest);

  // The layer blob over plain HTTP.
  const r = await fetch(`${s.url}/v2/${repo}/blobs/${layout.layerDigest}`);
  expect(r.status).toBe(200);
  const served = Buffer.from(await r.arrayBuffer());
  expect(served.length).toBe(disk.length);
  expect(sha256(served)).toBe(layout.layerDigest);
  expect(served.equals(disk)).toBe(true);

  // Pull back by tag and by digest.
  const refs: Array<[string, string]> = [
    [`${repo}:${layout.tag}`, 'bytag'],
    [`${repo}@${layout.manifestDigest}`, 'bydigest'],
  ];
  for (const [ref, label] of refs) {
    const out = await pull(ref, join(work, `pull-${repo.replace(/\//g, '_')}-${label}`), layout.tag);
    const m = await pulledManifest(out, layout.tag);
    expect(m.digest, `manifest digest preserved (${label})`).toBe(layout.manifestDigest);
    expect(m.bytes.equals(layout.manifest)).toBe(true);
    expect(m.json.layers).toHaveLength(1);
    expect(m.json.layers[0]!.digest).toBe(layout.layerDigest);
    expect(m.json.config.digest).toBe(layout.configDigest);
    const layer = await readFile(join(out, 'blobs', 'sha256', hex(layout.layerDigest)));
    expect(sha256(layer)).toBe(layout.layerDigest);
    expect(layer.equals(disk), `pulled layer is the original qcow2 (${label})`).toBe(true);
  }
}

/** Every chunk in the store: digest -> stored size. */
async function chunkSizes(): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  for await (const c of s.store.chunks.list()) m.set(c.digest, c.storedSize);
  return m;
}

async function chunkDigestsOf(digest: Digest): Promise<Map<string, number>> {
  const rec = await s.store.meta.getBlob(digest);
  expect(rec, `blob ${digest} in the store`).not.toBeNull();
  const index = await s.store.blobs.index(rec!);
  const out = new Map<string, number>();
  for (const list of index.lists()) {
    for (let i = 0; i < list.count; i++) out.set(list.digestAt(i), (out.get(list.digestAt(i)) ?? 0) + list.lengths[i]!);
  }
  return out;
}

/** Set when skopeo cannot be run: every test then fails with it (these tests are never skipped). */
let skopeoMissing: Error | null = null;
function requireSkopeo(): void {
  if (skopeoMissing) throw skopeoMissing;
}

beforeAll(async () => {
  try {
    await runTool('skopeo', ['--version']);
  } catch (e) {
    skopeoMissing = new Error(`skopeo is required by test/skopeo.test.ts and could not be run: ${(e as Error).message}`);
  }
  work = await mkdtemp(join(tmpdir(), 'snapyard-skopeo-'));
  const policy = join(work, 'policy.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  const registries = join(work, 'registries.conf');
  await writeFile(registries, '');
  await mkdir(join(work, 'tmp'));
  skopeoGlobal = ['--policy', policy, '--tmpdir', join(work, 'tmp')];
  skopeoEnv = { CONTAINERS_REGISTRIES_CONF: registries, REGISTRY_AUTH_FILE: join(work, 'auth.json'), TMPDIR: join(work, 'tmp') };
  s = await startTestServer();
  const fixtures = join(work, 'fixtures');
  basePath = await makeBaseImage(fixtures);
  variantPath = await makeVariant(fixtures, basePath, 'variant');
  baseBytes = await readFile(basePath);
  variantBytes = await readFile(variantPath);
});

afterAll(async () => {
  await s?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('skopeo against snapyard', () => {
  test('OCI 1.1 artifact manifest (empty config, qcow2 layer): push, inspect, pull by tag and digest, byte-identical', async () => {
    requireSkopeo();
    const layout = await writeLayout(join(work, 'layout-artifact'), 'v1', baseBytes, 'artifact');
    await expectRoundTrip(layout, 'win98/artifact', baseBytes);
    // The registry recorded the artifact type.
    const rec = await s.store.meta.getManifest('win98/artifact', layout.manifestDigest);
    expect(rec?.artifactType).toBe(ARTIFACT_TYPE);
  });

  test('image-shaped manifest (image config, tar media type around the qcow2): same round trip', async () => {
    requireSkopeo();
    const layout = await writeLayout(join(work, 'layout-image'), 'v1', baseBytes, 'image');
    await expectRoundTrip(layout, 'win98/image', baseBytes);
  });

  test('two related full images share most chunks in the store', async () => {
    requireSkopeo();
    const baseLayout = await writeLayout(join(work, 'layout-dedup-base'), 'base', baseBytes, 'artifact');
    const variantLayout = await writeLayout(join(work, 'layout-dedup-variant'), 'variant', variantBytes, 'artifact');
    expect(variantLayout.layerDigest).not.toBe(baseLayout.layerDigest);
    await push(baseLayout, 'win98/base');

    const before = await chunkSizes();
    await push(variantLayout, 'win98/variant');
    const after = await chunkSizes();

    const added = [...after].filter(([d]) => !before.has(d));
    const addedBytes = added.reduce((n, [, size]) => n + size, 0);
    const variantZstd = new ChunkCodec(3).encode(variantBytes).length;

    const baseChunks = await chunkDigestsOf(baseLayout.layerDigest);
    const variantChunks = await chunkDigestsOf(variantLayout.layerDigest);
    let sharedBytes = 0;
    let shared = 0;
    for (const [d, bytes] of variantChunks) {
      if (baseChunks.has(d)) {
        shared++;
        sharedBytes += bytes;
      }
    }
    const summary = {
      variantSize: variantBytes.length,
      variantZstd,
      chunksBefore: before.size,
      chunksAdded: added.length,
      addedStoredBytes: addedBytes,
      variantChunks: variantChunks.size,
      sharedChunks: shared,
      sharedFractionOfBytes: Math.round((sharedBytes / variantBytes.length) * 1000) / 1000,
    };
    console.log('dedup', summary);

    // The variant is a full image, yet the store grows by far less than its compressed size.
    expect(addedBytes, JSON.stringify(summary)).toBeLessThan(0.5 * variantZstd);
    expect(sharedBytes / variantBytes.length, JSON.stringify(summary)).toBeGreaterThan(0.6);
    // Both still read back exactly.
    for (const [repo, l, bytes] of [['win98/base', baseLayout, baseBytes], ['win98/variant', variantLayout, variantBytes]] as const) {
      const r = await fetch(`${s.url}/v2/${repo}/blobs/${l.layerDigest}`);
      expect(Buffer.from(await r.arrayBuffer()).equals(bytes)).toBe(true);
    }
  });
});

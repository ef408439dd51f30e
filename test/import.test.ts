/**
 * `snapyard import`: images packaged the old way (a qcow2 in a tar layer:
 * gzip, zstd, uncompressed; Docker v2 and OCI manifests) are built here,
 * pushed with skopeo to a real docker-registry (htpasswd auth) or written as
 * oci:/oci-archive:/docker-archive: sources, imported into a real snapyard
 * server, and pulled back byte-exact. Hostile inputs get one clear
 * `snapyard:` line and a non-zero exit.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cleanEnv, runCli } from './helpers/cli.js';
import { startDockerRegistry, type DockerRegistry } from './helpers/docker-registry.js';
import { compressLayer, skopeoIn, tarOf, writeLayout, type Compression } from './helpers/old-images.js';
import { makeBaseImage, makeVariant } from './helpers/qcow2-fixtures.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const USER = 'importer';
const PASS = 'old-registry-pw';

let s: TestServer;
let dr: DockerRegistry;
let work: string;
let base: Buffer;
let variant: Buffer;
let skopeo: (...args: string[]) => Promise<string>;
const tmp = tempDirs('snapyard-import-');

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return cleanEnv({ SNAPYARD_CACHE: join(work, 'cache'), ...extra });
}

async function snapyard(args: string[], extra: Record<string, string> = {}) {
  return runCli([...args, '--registry', s.url], { env: env(extra) });
}

async function importOk(args: string[], extra: Record<string, string> = {}): Promise<Array<Record<string, unknown>>> {
  const r = await snapyard(['import', ...args, '--json'], extra);
  expect(r.stderr, r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function pulled(ref: string): Promise<Buffer> {
  const out = join(tmp(), 'pulled.qcow2');
  const r = await snapyard(['pull', ref, '-o', out]);
  expect(r.code, r.stderr).toBe(0);
  return readFile(out);
}

/** An OCI layout at a fresh directory with one image per entry. */
async function layout(images: Array<{ tag: string; member: string; disk: Buffer; compression: Compression; layer?: Buffer; extra?: Array<{ name: string; data: Buffer }> }>): Promise<string> {
  const dir = tmp();
  const built = [];
  for (const i of images) {
    const tar = await tarOf([{ name: 'etc/os-release', data: Buffer.from('ID=old\n') }, ...(i.extra ?? []), { name: i.member, data: i.disk }]);
    built.push({ tag: i.tag, tar, compression: i.compression, ...(i.layer ? { layer: i.layer } : {}) });
  }
  await writeLayout(dir, built);
  return dir;
}

async function pushOld(dir: string, tag: string, repoTag: string, format: 'oci' | 'v2s2'): Promise<void> {
  await skopeo('copy', '--dest-tls-verify=false', '--dest-creds', `${USER}:${PASS}`, ...(format === 'v2s2' ? ['--format', 'v2s2'] : ['--preserve-digests']), `oci:${dir}:${tag}`, `docker://${dr.host}/${repoTag}`);
}

beforeAll(async () => {
  work = tmp();
  [s, dr] = await Promise.all([startTestServer(), startDockerRegistry({ [USER]: PASS })]);
  const basePath = await makeBaseImage(work);
  base = await readFile(basePath);
  variant = await readFile(await makeVariant(work, basePath, 'games'));
  skopeo = await skopeoIn(work);
}, 180_000);

afterAll(async () => {
  await Promise.all([s?.stop(), dr?.stop()]);
});

describe('import from a docker-registry', () => {
  test('gzip layer, Docker v2 manifest, htpasswd auth with --src-creds: pulled back byte-exact', async () => {
    const dir = await layout([{ tag: 'win98-base', member: 'snapshot.qcow2', disk: base, compression: 'gzip' }]);
    await pushOld(dir, 'win98-base', 'mroie/qemu-snapshots:win98-base', 'v2s2');
    const mt = JSON.parse(await skopeo('inspect', '--raw', '--tls-verify=false', '--creds', `${USER}:${PASS}`, `docker://${dr.host}/mroie/qemu-snapshots:win98-base`)) as { mediaType: string };
    expect(mt.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    const [sum] = await importOk([`docker://${dr.host}/mroie/qemu-snapshots:win98-base`, 'win98:win98-base', '--src-creds', `${USER}:${PASS}`, '--src-insecure']);
    expect(sum).toMatchObject({ ref: 'win98:win98-base', member: '/snapshot.qcow2' });
    expect((sum!.push as { layout: string }).layout).toBe('qcow2');
    expect((await pulled('win98:win98-base')).equals(base)).toBe(true);
  });

  test('zstd and uncompressed OCI layers at the other usual paths; credentials from a Docker config file', async () => {
    const dir = await layout([
      { tag: 'win98-games', member: 'emulator-snapshot/games.qcow2', disk: variant, compression: 'zstd' },
      { tag: 'builtin', member: 'opt/builtin-images/win98.builtin', disk: base, compression: 'none' },
      { tag: 'tagged', member: 'tagged.qcow2', disk: variant, compression: 'gzip', extra: [{ name: 'other.qcow2', data: Buffer.from('not it') }] },
    ]);
    for (const t of ['win98-games', 'builtin', 'tagged']) await pushOld(dir, t, `old/images:${t}`, 'oci');
    const authFile = join(tmp(), 'config.json');
    await writeFile(authFile, JSON.stringify({ auths: { [dr.host]: { auth: Buffer.from(`${USER}:${PASS}`).toString('base64') } } }));
    for (const [t, disk, member] of [['win98-games', variant, '/emulator-snapshot/games.qcow2'], ['builtin', base, '/opt/builtin-images/win98.builtin'], ['tagged', variant, '/tagged.qcow2']] as const) {
      const [sum] = await importOk([`docker://${dr.host}/old/images:${t}`, `moved:${t}`, '--src-insecure'], { REGISTRY_AUTH_FILE: authFile });
      expect(sum!.member).toBe(member);
      expect((await pulled(`moved:${t}`)).equals(disk), t).toBe(true);
    }
  });

  test('--all-tags imports every tag of the repository to the same tag', async () => {
    const dir = await layout([
      { tag: 'v1', member: 'snapshot.qcow2', disk: base, compression: 'gzip' },
      { tag: 'v2', member: 'snapshot.qcow2', disk: variant, compression: 'gzip' },
    ]);
    await pushOld(dir, 'v1', 'old/all:v1', 'oci');
    await pushOld(dir, 'v2', 'old/all:v2', 'oci');
    const sums = await importOk([`docker://${dr.host}/old/all`, 'all', '--all-tags', '--src-creds', `${USER}:${PASS}`, '--insecure']);
    expect(sums.map((x) => x.ref)).toEqual(['all:v1', 'all:v2']);
    // The variant shares most of its guest data with the base: most of its chunks were already there.
    const p2 = sums[1]!.push as { chunks: number; newChunks: number };
    expect(p2.newChunks).toBeLessThan(p2.chunks / 2);
    expect((await pulled('all:v1')).equals(base)).toBe(true);
    expect((await pulled('all:v2')).equals(variant)).toBe(true);
    const r = await snapyard(['import', `docker://${dr.host}/old/all`, 'all:v1', '--all-tags', '--insecure']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^snapyard: INVALID_ARGUMENT: --all-tags .*REF is a repository/);
  });

  test('wrong or missing source credentials: one clear line, non-zero exit', async () => {
    const dir = await layout([{ tag: 'x', member: 'snapshot.qcow2', disk: base, compression: 'gzip' }]);
    await pushOld(dir, 'x', 'old/auth:x', 'oci');
    for (const creds of [['--src-creds', `${USER}:wrong`], []]) {
      const r = await snapyard(['import', `docker://${dr.host}/old/auth:x`, 'auth:x', ...creds, '--src-insecure']);
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^snapyard: (REGISTRY_ERROR: UNAUTHORIZED \(HTTP 401\)|UNAUTHORIZED)/);
    }
  });
});

describe('import from oci:, oci-archive: and docker-archive: (made with skopeo copy)', () => {
  test('each transport round-trips byte-exact', async () => {
    const dir = await layout([{ tag: 'win98-base', member: 'snapshot.qcow2', disk: variant, compression: 'gzip' }]);
    const d = tmp();
    await skopeo('copy', `oci:${dir}:win98-base`, `oci-archive:${join(d, 'img.tar')}:win98-base`);
    await skopeo('copy', `oci:${dir}:win98-base`, `docker-archive:${join(d, 'docker.tar')}:old/win98:win98-base`);
    for (const [src, tag] of [[`oci:${dir}:win98-base`, 'oci'], [`oci-archive:${join(d, 'img.tar')}`, 'oci-archive'], [`docker-archive:${join(d, 'docker.tar')}`, 'docker-archive']] as const) {
      const [sum] = await importOk([src, `transports:${tag}`]);
      expect(sum!.member, src).toBe('/snapshot.qcow2');
      expect((await pulled(`transports:${tag}`)).equals(variant), src).toBe(true);
    }
  });

  test('an index picks linux/amd64 unless --platform', async () => {
    const dir = await layout([
      { tag: 'amd', member: 'snapshot.qcow2', disk: base, compression: 'none' },
      { tag: 'arm', member: 'snapshot.qcow2', disk: variant, compression: 'none' },
    ]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Array<Record<string, unknown>> };
    const [amd, arm] = index.manifests;
    const multi = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { ...arm, annotations: undefined, platform: { os: 'linux', architecture: 'arm64' } },
        { ...amd, annotations: undefined, platform: { os: 'linux', architecture: 'amd64' } },
      ],
    }));
    const { sha256 } = await import('./helpers/old-images.js');
    const md = sha256(multi);
    await writeFile(join(dir, 'blobs', 'sha256', md.slice(7)), multi);
    index.manifests.push({ mediaType: 'application/vnd.oci.image.index.v1+json', digest: md, size: multi.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } });
    await writeFile(join(dir, 'index.json'), JSON.stringify(index));
    await importOk([`oci:${dir}:multi`, 'multi:amd64']);
    await importOk([`oci:${dir}:multi`, 'multi:arm64', '--platform', 'linux/arm64']);
    expect((await pulled('multi:amd64')).equals(base)).toBe(true);
    expect((await pulled('multi:arm64')).equals(variant)).toBe(true);
    const r = await snapyard(['import', `oci:${dir}:multi`, 'multi:x', '--platform', 'windows/amd64']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^snapyard: NOT_FOUND: .*no image for windows\/amd64 in the index \(it has: linux\/arm64, linux\/amd64/);
  });
});

describe('hostile inputs: one snapyard: line, non-zero exit, nothing tagged', () => {
  async function expectFails(src: string, ref: string, pattern: RegExp, extra: Record<string, string> = {}, flags: string[] = []): Promise<void> {
    const r = await snapyard(['import', src, ref, ...flags], extra);
    expect(r.code, r.stdout).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
    const tags = await fetch(`${s.url}/v2/${ref.split(':')[0]}/tags/list`).then((x) => x.json() as Promise<{ tags?: string[] | null }>, () => ({ tags: null }));
    expect(tags.tags ?? []).not.toContain(ref.split(':')[1]);
  }

  test('a layer with no qcow2', async () => {
    const dir = await layout([{ tag: 't', member: 'usr/share/doc/readme.txt', disk: Buffer.from('hello'), compression: 'gzip' }]);
    await expectFails(`oci:${dir}:t`, 'hostile:noqcow2', /^snapyard: NOT_FOUND: oci:.*:t: none of its 1 layers holds a disk image \(looked for \/snapshot\.qcow2, \/t\.qcow2, \/emulator-snapshot\/\*\.qcow2, \/opt\/builtin-images\/\*\.builtin; name the file with --path\)$/);
    // --path names it: then it is found (a non-qcow2 disk is pushed byte-chunked).
    const r = await snapyard(['import', `oci:${dir}:t`, 'hostile:bypath', '--path', '/usr/share/doc/readme.txt']);
    expect(r.code, r.stderr).toBe(0);
  });

  test('a tar member that claims more bytes than the layer holds, and one that claims fewer', async () => {
    for (const [claim, tag] of [[base.length + 4096, 'longer'], [base.length - 100_000, 'shorter']] as const) {
      const tar = await tarOf([{ name: 'snapshot.qcow2', data: base, claimedSize: claim }]);
      const dir = tmp();
      await writeLayout(dir, [{ tag: 't', tar, compression: 'none' }]);
      await expectFails(`oci:${dir}:t`, `hostile:${tag}`, /^snapyard: INVALID_ARGUMENT: layer sha256:[0-9a-f]{64}: not a valid tar stream: /);
    }
  });

  test('a truncated gzip layer', async () => {
    const tar = await tarOf([{ name: 'snapshot.qcow2', data: base }]);
    const gz = compressLayer(tar, 'gzip');
    const dir = tmp();
    await writeLayout(dir, [{ tag: 't', tar, compression: 'gzip', layer: gz.subarray(0, Math.floor(gz.length / 2)) }]);
    await expectFails(`oci:${dir}:t`, 'hostile:truncgz', /^snapyard: INVALID_ARGUMENT: layer sha256:[0-9a-f]{64}: the gzip stream is truncated or corrupt \(unexpected end of file/);
  });

  test('a layer whose bytes do not match its digest', async () => {
    const dir = await layout([{ tag: 't', member: 'snapshot.qcow2', disk: base, compression: 'none' }]);
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    const m = JSON.parse(await readFile(join(dir, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as { layers: Array<{ digest: string }> };
    const layerPath = join(dir, 'blobs', 'sha256', m.layers[0]!.digest.slice(7));
    const bytes = await readFile(layerPath);
    bytes[bytes.length - 2000] = bytes[bytes.length - 2000]! ^ 0xff; // inside the tar's end padding: the tar still parses
    await writeFile(layerPath, bytes);
    await expectFails(`oci:${dir}:t`, 'hostile:digest', /^snapyard: INVALID_ARGUMENT: layer sha256:[0-9a-f]{64}: its content has digest sha256:[0-9a-f]{64}, not sha256:/);
  });

  test('a corrupt dockerconfigjson for the source', async () => {
    const f = join(tmp(), '.dockerconfigjson');
    await writeFile(f, '{"auths": {"x": ');
    await expectFails(`docker://${dr.host}/old/images:builtin`, 'hostile:creds', /^snapyard: INVALID_ARGUMENT: registry auth file .*\.dockerconfigjson is not valid JSON/, { REGISTRY_AUTH_FILE: f }, ['--src-insecure']);
  });

  test('a source that is not a transport, and a missing archive', async () => {
    await expectFails('ftp://x/y', 'hostile:src', /^snapyard: INVALID_ARGUMENT: import source "ftp:\/\/x\/y": unknown transport/);
    await expectFails(`oci-archive:${join(work, 'nope.tar')}`, 'hostile:missing', /^snapyard: .*nope\.tar/);
  });
});

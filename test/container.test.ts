/**
 * The container image, built from the unchanged Dockerfile (scripts/container.sh:
 * buildah, and a local stand-in for node:22-bookworm-slim when no registry is
 * reachable) and run with podman the way deploy/kubernetes declares it: the
 * registry container's args, config file (the ConfigMap), credentials (the
 * Secret's keys, with the test's users) and security context; the emulator's
 * init containers' commands, args, environment (envFrom the example's
 * ConfigMap and Secret; only the registry address, the password and POD_NAME,
 * which the downward API gives, are the test's) and security contexts. All
 * read from the YAML, none copied here.
 *
 * Serves from a volume; skopeo round trip; `snapyard push` from the host; two
 * emulator pods starting at once on one node's hostPath images and cache
 * directories (`snapyard pod-init`) leave instance overlays that qemu-img check
 * and compare accept, from one download; a stop and start keeps every
 * snapshot; SIGTERM stops the registry within 10 s and the request in flight
 * is finished.
 *
 * Needs root (podman), like CI. Every container is removed afterwards, failed
 * or not; names are unique per process.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, cliOk, runCli } from './helpers/cli.js';
import { resolveKustomization, type K8sObject } from './helpers/kustomize.js';
import { buildImage, containerEnv, Podman, podmanRunArgs, run } from './helpers/podman.js';
import { makeBaseImage, makeVariant } from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const K8S = resolve(import.meta.dirname, '..', 'deploy', 'kubernetes');
const UID = 10001;
const ADMIN = { user: 'admin', password: randomBytes(12).toString('hex') };
const PODS = { user: 'pods', password: randomBytes(12).toString('hex') };
const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const newDir = tempDirs('snapyard-container-');
let podman: Podman;
let registryObjs: K8sObject[];
let registry: { name: string; url: string; metricsUrl: string; runArgs: string[] };
let work: string;
let base: string;
let games: string;

async function freePort(): Promise<number> {
  return new Promise((done) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => done(port));
    });
  });
}

/** A directory the container user owns (fsGroup / a volume claim). */
function ownedDir(path: string): string {
  mkdirSync(path, { recursive: true });
  chownSync(path, UID, UID);
  return path;
}

/** A ConfigMap's or Secret's keys as files in a host directory, readable by the container user only. */
function filesOf(o: K8sObject, dir: string, replace: Record<string, string> = {}): string {
  mkdirSync(dir, { recursive: true });
  for (const k of [...Object.keys(o.data ?? {}), ...Object.keys(o.stringData ?? {})]) {
    const v = replace[k] ?? (o.stringData?.[k] as string | undefined) ?? (o.kind === 'Secret' ? Buffer.from(o.data[k], 'base64').toString() : o.data[k]);
    writeFileSync(join(dir, k), v);
    chownSync(join(dir, k), UID, UID);
    chmodSync(join(dir, k), 0o440);
  }
  return dir;
}

const basic = (u: { user: string; password: string }) => ({ authorization: `Basic ${Buffer.from(`${u.user}:${u.password}`).toString('base64')}` });

async function waitReady(url: string, ms = 30_000): Promise<void> {
  const until = Date.now() + ms;
  let last = '';
  while (Date.now() < until) {
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.status === 200) return;
      last = `${r.status} ${await r.text()}`;
    } catch (e) {
      last = String((e as Error).cause ?? e);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const logs = await podman.run(['logs', registry.name]);
  throw new Error(`${url}/readyz not 200 within ${ms} ms (${last})\n${logs.stdout}${logs.stderr}`);
}

/** Every tag of every repository with the manifest digest it points at. */
async function snapshots(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const cat = (await (await fetch(`${registry.url}/v2/_catalog`, { headers: basic(ADMIN) })).json()) as { repositories: string[] };
  for (const repo of cat.repositories) {
    const tags = (await (await fetch(`${registry.url}/v2/${repo}/tags/list`, { headers: basic(ADMIN) })).json()) as { tags: string[] };
    for (const t of tags.tags) {
      const r = await fetch(`${registry.url}/v2/${repo}/manifests/${t}`, { method: 'HEAD', headers: { ...basic(ADMIN), accept: 'application/vnd.oci.image.manifest.v1+json' } });
      out[`${repo}:${t}`] = r.headers.get('docker-content-digest') ?? `HTTP ${r.status}`;
    }
  }
  return out;
}

async function startRegistry(): Promise<void> {
  await podman.ok(['run', '-d', '--name', registry.name, ...registry.runArgs]);
  await waitReady(registry.url);
}

beforeAll(async () => {
  const built = await buildImage();
  podman = new Podman(built.image, built.env);
  work = newDir();
  base = await makeBaseImage(work);
  games = await makeVariant(work, base, 'games-v2');

  // The registry as deploy/kubernetes/base declares it.
  registryObjs = resolveKustomization(join(K8S, 'base'));
  const sts = registryObjs.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'snapyard')!;
  const c = sts.spec.template.spec.containers[0];
  const htpasswd = join(work, 'htpasswd');
  for (const u of [ADMIN, PODS]) await cliOk(['passwd', htpasswd, u.user], { input: `${u.password}\n` });
  const volumes: Record<string, string> = { data: ownedDir(join(work, 'data')) };
  for (const v of sts.spec.template.spec.volumes) {
    const o = registryObjs.find((x) => (v.configMap ? x.kind === 'ConfigMap' && x.metadata.name === v.configMap.name : x.kind === 'Secret' && x.metadata.name === v.secret.secretName))!;
    volumes[v.name] = filesOf(o, join(work, v.name), o.kind === 'Secret' ? { htpasswd: readFileSync(htpasswd, 'utf8'), 'token-secret': randomBytes(32).toString('hex') } : {});
  }
  const [port, metricsPort] = [await freePort(), await freePort()];
  const env = { SNAPYARD_HOST: '127.0.0.1', SNAPYARD_PORT: String(port), SNAPYARD_METRICS_ADDR: `127.0.0.1:${metricsPort}` };
  registry = {
    name: podman.name('registry'),
    url: `http://127.0.0.1:${port}`,
    metricsUrl: `http://127.0.0.1:${metricsPort}`,
    runArgs: podmanRunArgs(registryObjs, sts, c, podman.image, { volumes, envExtra: env }),
  };
  await startRegistry();
}, 30 * 60_000);

afterAll(async () => {
  await podman?.removeAll();
});

describe('the container image', () => {
  it('serves from its volume as uid 10001, with the image HEALTHCHECK passing, /healthz, /readyz and /metrics on its own port', async () => {
    expect((await fetch(`${registry.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${registry.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${registry.url}/v2/`)).status).toBe(401);
    expect((await fetch(`${registry.url}/v2/`, { headers: basic(ADMIN) })).status).toBe(200);
    expect(await (await fetch(`${registry.metricsUrl}/metrics`)).text()).toMatch(/^# HELP /m);
    // The web page is built into the image (docs/ui.md): its shell and assets, from dist/ui.
    const shell = await (await fetch(`${registry.url}/ui/`)).text();
    const assets = [...shell.matchAll(/(?:src|href)="(\/ui\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    expect(assets).toHaveLength(2);
    for (const a of assets) expect((await fetch(`${registry.url}${a}`, { headers: { 'accept-encoding': 'gzip' } })).headers.get('content-encoding')).toBe('gzip');
    await podman.ok(['healthcheck', 'run', registry.name]);
    const inspect = JSON.parse(await podman.ok(['image', 'inspect', podman.image]))[0];
    expect(inspect.Config.Entrypoint).toEqual(['snapyard']);
    expect(inspect.Config.Cmd).toEqual(['serve', '--data', '/data']);
    expect(inspect.Config.User).toBe('10001:10001');
    expect(Object.keys(inspect.Config.ExposedPorts)).toEqual(['5000/tcp']);
    expect(Object.keys(inspect.Config.Volumes)).toEqual(['/data']);
    expect((await podman.ok(['exec', registry.name, 'node', '-e', 'process.stdout.write(String(process.getuid()))'])).trim()).toBe('10001');
    const size = Number((await podman.ok(['image', 'inspect', podman.image, '--format', '{{.Size}}'])).trim());
    const baseSize = Number((await podman.ok(['image', 'inspect', 'docker.io/library/node:22-bookworm-slim', '--format', '{{.Size}}'])).trim());
    console.log(`image ${(size / 1e6).toFixed(1)} MB, base ${(baseSize / 1e6).toFixed(1)} MB (+${((size - baseSize) / 1e6).toFixed(1)} MB)`);
    expect(size - baseSize).toBeLessThanOrEqual(80e6);
    // No compiler or build tool made it into the runtime stage.
    const tools = await podman.run(['run', '--rm', '--entrypoint', 'sh', podman.image, '-c', 'command -v gcc g++ make python3 tsc; ls /app/node_modules/typescript /app/node_modules/vitest /app/node_modules/esbuild /app/node_modules/playwright-core /app/node_modules/preact 2>/dev/null; true']);
    expect(tools.stdout.trim()).toBe('');
  });

  it('skopeo copies an OCI layout in and back out, byte for byte', async () => {
    const layout = join(work, 'layout');
    const blobs = join(layout, 'blobs', 'sha256');
    mkdirSync(blobs, { recursive: true });
    const put = (b: Buffer) => {
      const d = sha256(b);
      writeFileSync(join(blobs, d.slice(7)), b);
      return { digest: d, size: b.length };
    };
    const layer = readFileSync(base);
    const manifest = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      artifactType: 'application/vnd.snapyard.qcow2',
      config: { mediaType: 'application/vnd.oci.empty.v1+json', ...put(Buffer.from('{}')) },
      layers: [{ mediaType: 'application/vnd.snapyard.qcow2.v1', ...put(layer) }],
    }));
    const m = put(manifest);
    writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
    const host = registry.url.slice('http://'.length);
    const creds = `${ADMIN.user}:${ADMIN.password}`;
    const sk = async (args: string[]) => {
      const r = await run('skopeo', ['--insecure-policy', ...args], { env: cleanEnv() });
      expect(r.code, r.stderr).toBe(0);
    };
    await sk(['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-creds', creds, `oci:${layout}:v1`, `docker://${host}/skopeo/disk:v1`]);
    const back = join(work, 'back');
    await sk(['copy', '--preserve-digests', '--src-tls-verify=false', '--src-creds', creds, '--dest-oci-accept-uncompressed-layers', `docker://${host}/skopeo/disk:v1`, `oci:${back}:v1`]);
    const index = JSON.parse(readFileSync(join(back, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(m.digest);
    expect(readFileSync(join(back, 'blobs', 'sha256', sha256(layer).slice(7))).equals(layer)).toBe(true);
  });

  it('takes `snapyard push` from the host (with the credentials the Secret mounts)', async () => {
    const env = cleanEnv({ SNAPYARD_REGISTRY: registry.url, SNAPYARD_USERNAME: ADMIN.user, SNAPYARD_PASSWORD: ADMIN.password });
    for (const [ref, file] of [['win98:base-v1', base], ['win98:games-v2', games]] as const) await cliOk(['push', ref, file], { env });
    const snaps = await snapshots();
    expect(Object.keys(snaps).sort()).toEqual(['skopeo/disk:v1', 'win98:base-v1', 'win98:games-v2']);
    // The pods user may pull, not push (the access rules in the ConfigMap).
    const denied = await run(process.execPath, ['bin/snapyard.js', 'push', 'win98:x', base], { env: cleanEnv({ SNAPYARD_REGISTRY: registry.url, SNAPYARD_USERNAME: PODS.user, SNAPYARD_PASSWORD: PODS.password }) });
    expect(denied.code).not.toBe(0);
  });

  it("the emulator's init containers, run as declared for two pods starting at once on one node's images and cache directories, leave clean instance overlays from one download", async () => {
    const objs = resolveKustomization(join(K8S, 'examples', 'emulator'));
    const sts = objs.find((o) => o.kind === 'StatefulSet' && o.metadata.name === 'emulator')!;
    const spec = sts.spec.template.spec;
    const inits = spec.initContainers as Record<string, any>[];
    const podInit = inits.find((c) => c.args?.[0] === 'pod-init')!;
    const qemu = spec.containers.find((c: { name: string }) => c.name === 'qemu');
    const env = containerEnv(objs, podInit);
    expect(podInit.env).toContainEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
    // The node: one host directory per hostPath volume, created root-owned (DirectoryOrCreate); the chown init container hands them over.
    const node = join(work, 'emulator-node');
    const volumes: Record<string, string> = {};
    for (const v of spec.volumes as { name: string; hostPath: { type: string } }[]) {
      expect(v.hostPath.type, v.name).toBe('DirectoryOrCreate');
      volumes[v.name] = join(node, v.name);
      mkdirSync(volumes[v.name]!, { recursive: true });
    }
    const images = podInit.volumeMounts.find((m: { mountPath: string }) => m.mountPath === env.SNAPSHOT_DIR);
    const cache = podInit.volumeMounts.find((m: { mountPath: string }) => m.mountPath === env.SNAPYARD_CACHE);
    expect(qemu.volumeMounts).toContainEqual(images);
    /** A path in the pods' images directory, on the node. */
    const onNode = (p: string) => {
      expect(p.startsWith(`${images.mountPath}/`), p).toBe(true);
      return join(volumes[images.name]!, p.slice(images.mountPath.length + 1));
    };
    // The in-cluster repository (snapyard:5000/win98) at the test's registry.
    const snapshotRegistry = env.SNAPSHOT_REGISTRY!.replace(/^[^/]+/, registry.url.slice('http://'.length));
    interface PodInitJson { action: string; snapshot: string; snapshotForm: string; overlay: string; overlayAction: string; bytesDownloaded: number }
    /** Pod `emulator-<ordinal>`: its init containers in order, as declared; pod-init's JSON line. */
    const startPod = async (ordinal: number, o: { tag?: string; branch?: string } = {}): Promise<PodInitJson> => {
      const pod = `${sts.metadata.name}-${ordinal}`;
      let out = '';
      for (const c of inits) {
        const args = podmanRunArgs(objs, sts, c, podman.image, {
          volumes,
          ...(c === podInit
            ? {
                envOverrides: { SNAPSHOT_REGISTRY: snapshotRegistry, SNAPYARD_PASSWORD: PODS.password, POD_NAME: pod, ...(o.tag ? { SNAPSHOT_TAG: o.tag } : {}) },
                envExtra: o.branch ? { SNAPSHOT_BRANCH: o.branch } : {},
              }
            : {}),
        });
        out = await podman.ok(['run', '--name', podman.name(`${pod}-${c.name}`), ...args], 10 * 60_000);
      }
      return JSON.parse(out.trim().split('\n').pop()!) as PodInitJson;
    };

    // Earlier on this node: pods of the base branch left base-v1 in the images directory.
    const seeded = await startPod(0, { tag: 'base-v1', branch: 'base' });
    expect(seeded).toMatchObject({ action: 'downloaded', snapshot: `${images.mountPath}/base/base.qcow2`, snapshotForm: 'full' });
    for (const v of Object.values(volumes)) expect(statSync(v).uid, v).toBe(UID);

    // Two pods of the StatefulSet start at once on that node.
    const pods = await Promise.all([startPod(0), startPod(1)]);
    expect(pods.map((r) => r.action).sort()).toEqual(['downloaded', 'reused']);
    const [downloaded, reused] = [pods.find((r) => r.action === 'downloaded')!, pods.find((r) => r.action === 'reused')!];
    // Only the clusters games-v2 does not share with the base on the node travelled; the second pod fetched nothing.
    expect(downloaded.snapshotForm).toBe('overlay');
    expect(downloaded.bytesDownloaded).toBeGreaterThan(0);
    expect(downloaded.bytesDownloaded).toBeLessThan(statSync(games).size / 2);
    expect(reused.bytesDownloaded).toBe(0);
    expect(existsSync(join(volumes[cache.name]!, 'state.json')), 'the pods used the node cache').toBe(true);
    for (const [ordinal, r] of pods.entries()) {
      expect(r).toMatchObject({ snapshot: env.DISK, overlay: `${images.mountPath}/win98_instance_${ordinal}.qcow2`, overlayAction: 'created' });
      // The chain as the QEMU container sees it (absolute /images paths), opened on the node's directory.
      let opts = '';
      let prefix = '';
      for (let f: string | undefined = r.overlay; f !== undefined; prefix += 'backing.') {
        opts += `${opts ? ',' : ''}${prefix}driver=qcow2,${prefix}file.filename=${onNode(f)}`;
        const info = JSON.parse((await run('qemu-img', ['info', '--output=json', onNode(f)])).stdout);
        f = info['backing-filename'];
        if (f !== undefined) expect(f.startsWith(`${images.mountPath}/`), `${r.overlay}: backing file ${f} absolute under ${images.mountPath}`).toBe(true);
      }
      expect(opts).toContain(`backing.backing.file.filename=${onNode(seeded.snapshot)}`);
      const check = await run('qemu-img', ['check', '--image-opts', opts]);
      expect(check.code, check.stdout + check.stderr).toBe(0);
      const cmp = await run('qemu-img', ['compare', '--image-opts', opts, `driver=qcow2,file.filename=${games}`]);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
      expect(cmp.stdout).toMatch(/Images are identical/);
    }
    // The QEMU container boots the pod's instance overlay from the same environment.
    expect(qemu.envFrom).toEqual(podInit.envFrom.filter((f: { configMapRef?: unknown }) => f.configMapRef));
    expect(qemu.args.join('\n')).toContain('TOP="$SNAPSHOT_DIR/win98_instance_$N.qcow2"');
  });

  it('keeps every snapshot across a stop and start of the registry container', async () => {
    const before = await snapshots();
    await podman.ok(['stop', '-t', '10', registry.name]);
    await podman.ok(['start', registry.name]);
    await waitReady(registry.url);
    expect(await snapshots()).toEqual(before);
    const env = cleanEnv({ SNAPYARD_REGISTRY: registry.url, SNAPYARD_USERNAME: ADMIN.user, SNAPYARD_PASSWORD: ADMIN.password });
    const verify = await runCli(['verify', '--json'], { env });
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const out = join(work, 'games-again.qcow2');
    await cliOk(['pull', 'win98:games-v2', '-o', out, '--cache', join(work, 'cache')], { env });
    expect(readFileSync(out).equals(readFileSync(games))).toBe(true);
  });

  it('stops within 10 s of SIGTERM, exit 0, after finishing the request in flight', async () => {
    const layer = readFileSync(base);
    const r = await fetch(`${registry.url}/v2/skopeo/disk/blobs/${sha256(layer)}`, { headers: basic(ADMIN) });
    expect(r.status).toBe(200);
    const reader = r.body!.getReader();
    const parts: Uint8Array[] = [];
    const first = await reader.read();
    parts.push(first.value!);
    const t0 = Date.now();
    await podman.ok(['kill', '--signal', 'TERM', registry.name]);
    // Keep reading after the signal: the response must still arrive whole.
    await new Promise((res) => setTimeout(res, 300));
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
    }
    const body = Buffer.concat(parts);
    expect(body.length).toBe(layer.length);
    expect(sha256(body)).toBe(sha256(layer));
    const exit = (await podman.ok(['wait', registry.name], 30_000)).trim();
    const seconds = (Date.now() - t0) / 1000;
    expect(exit).toBe('0');
    expect(seconds).toBeLessThan(10);
    // The GET was still being served when the signal arrived: its log line (written when it ends) follows the shutdown line.
    const lines = (await podman.ok(['logs', registry.name])).split('\n');
    const stop = lines.findLastIndex((l) => l.includes('"signal":"SIGTERM"'));
    const served = lines.findLastIndex((l) => l.includes(`"path":"/v2/skopeo/disk/blobs/${sha256(layer)}"`));
    expect(stop).toBeGreaterThan(0);
    expect(served).toBeGreaterThan(stop);
    expect(JSON.parse(lines[served]!)).toMatchObject({ route: 'blob.get', status: 200 });
    expect(JSON.parse(lines[served]!).aborted).toBeUndefined();
  });
});

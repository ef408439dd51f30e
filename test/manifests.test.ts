/**
 * deploy/: every YAML file parses; every kustomization resolves (resources
 * exist, patches hit objects) into objects the Kubernetes schemas accept,
 * strictly (kubernetes-models; unknown fields are errors); and the objects
 * fit together: selectors, ports, probes, volumes, config and secret
 * references, the config file's keys and the files it names.
 */
import { describe, expect, it } from 'vitest';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { readConfigFile, SETTINGS } from '../cli/serve-options.js';
import { containersOf, objectId, podTemplate, readYamlDocs, resolveKustomization, type K8sObject } from './helpers/kustomize.js';
import { validateObject } from './helpers/k8s-validate.js';
import { tempDirs } from './helpers/tmp.js';

const ROOT = resolve(import.meta.dirname, '..');
const DEPLOY = join(ROOT, 'deploy');
const K8S = join(DEPLOY, 'kubernetes');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const yamlFiles = walk(DEPLOY).filter((f) => /\.ya?ml$/.test(f));
const kustomizations = yamlFiles.filter((f) => f.endsWith('/kustomization.yaml')).map((f) => f.slice(0, -'/kustomization.yaml'.length));
const rel = (p: string) => relative(ROOT, p);
const tmpDir = tempDirs('snapyard-manifests-');

function find(objs: K8sObject[], kind: string, name: string): K8sObject | undefined {
  return objs.find((o) => o.kind === kind && o.metadata.name === name);
}

/** Keys a container's environment takes from ConfigMaps and Secrets, each checked to exist among objs. */
function checkEnvRefs(objs: K8sObject[], c: Record<string, any>, where: string): void {
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
    if (!ref) continue;
    const kind = e.valueFrom.secretKeyRef ? 'Secret' : 'ConfigMap';
    const o = find(objs, kind, ref.name);
    expect(o, `${where}: env ${e.name} names ${kind} ${ref.name}`).toBeDefined();
    expect({ ...o!.data, ...o!.stringData }, `${where}: ${kind} ${ref.name} has ${ref.key}`).toHaveProperty([ref.key]);
  }
  for (const f of c.envFrom ?? []) {
    const kind = f.secretRef ? 'Secret' : 'ConfigMap';
    const name = (f.secretRef ?? f.configMapRef).name;
    expect(find(objs, kind, name), `${where}: envFrom names ${kind} ${name}`).toBeDefined();
  }
}

/** What a workload's pod needs from the other objects: volumes, mounts, env, ports, labels. */
function checkWorkload(objs: K8sObject[], w: K8sObject): void {
  const t = podTemplate(w)!;
  const id = objectId(w);
  for (const [k, v] of Object.entries(w.spec.selector.matchLabels as Record<string, string>)) {
    expect(t.metadata?.labels?.[k], `${id}: the selector's ${k} is on the pod template`).toBe(v);
  }
  const volumes = new Map<string, Record<string, any>>((t.spec.volumes ?? []).map((v: Record<string, any>) => [v.name, v]));
  for (const c of w.spec.volumeClaimTemplates ?? []) volumes.set(c.metadata.name, { claim: true });
  for (const v of volumes.values()) {
    if (v.configMap) expect(find(objs, 'ConfigMap', v.configMap.name), `${id}: volume ${v.name} names ConfigMap ${v.configMap.name}`).toBeDefined();
    if (v.secret) expect(find(objs, 'Secret', v.secret.secretName), `${id}: volume ${v.name} names Secret ${v.secret.secretName}`).toBeDefined();
  }
  const pod = t.spec.securityContext ?? {};
  for (const c of containersOf(w)) {
    const where = `${id} container ${c.name}`;
    for (const m of c.volumeMounts ?? []) expect(volumes.has(m.name), `${where}: mount ${m.mountPath} names volume ${m.name}`).toBe(true);
    checkEnvRefs(objs, c, where);
    expect(c.resources?.requests, `${where}: resource requests`).toBeDefined();
    expect(c.resources?.limits?.memory, `${where}: a memory limit`).toBeDefined();
    const sc = { ...pod, ...c.securityContext };
    expect(sc.allowPrivilegeEscalation, `${where}: allowPrivilegeEscalation`).toBe(false);
    if (String(c.image).startsWith('snapyard:') && sc.runAsUser !== 0) {
      expect([sc.runAsUser, sc.runAsNonRoot], `${where}: the image's user 10001`).toEqual([10001, true]);
    }
    for (const p of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
      if (p?.httpGet) expect((c.ports ?? []).map((x: { name: string }) => x.name), `${where}: probe port`).toContain(p.httpGet.port);
    }
  }
}

describe('deploy/ manifests', () => {
  it('finds the manifests: base, the TLS overlay and the examples', () => {
    expect(kustomizations.map(rel).sort()).toEqual([
      'deploy/kubernetes/base',
      'deploy/kubernetes/examples/emulator',
      'deploy/kubernetes/examples/node-cache',
      'deploy/kubernetes/examples/pull-credentials',
      'deploy/kubernetes/overlays/replicas',
      'deploy/kubernetes/overlays/tls-ingress',
    ]);
  });

  it('every YAML file parses, and every file in a kustomization directory is used by it', () => {
    for (const f of yamlFiles) expect(() => readYamlDocs(f), rel(f)).not.toThrow();
    for (const dir of kustomizations) {
      const k = readYamlDocs(join(dir, 'kustomization.yaml'))[0] as { resources?: string[]; patches?: { path?: string }[] };
      const used = new Set([...(k.resources ?? []), ...(k.patches ?? []).flatMap((p) => (p.path ? [p.path] : []))].map((r) => resolve(dir, r)));
      for (const n of readdirSync(dir)) {
        const p = join(dir, n);
        if (n !== 'kustomization.yaml' && !statSync(p).isDirectory()) expect(used.has(p), `${rel(p)} is listed in its kustomization.yaml`).toBe(true);
      }
    }
  });

  it.each(kustomizations.map((d) => [rel(d), d]))('%s resolves into objects the Kubernetes schemas accept (unknown fields included)', (_, dir) => {
    const objs = resolveKustomization(dir);
    expect(objs.length).toBeGreaterThan(0);
    const problems = objs.flatMap(validateObject);
    expect(problems).toEqual([]);
    for (const w of objs.filter((o) => podTemplate(o))) checkWorkload(objs, w);
  });

  it('the schema check fails on what the API server would refuse', () => {
    const sts = structuredClone(find(resolveKustomization(join(K8S, 'base')), 'StatefulSet', 'snapyard')!);
    const c = sts.spec.template.spec.containers[0];
    c.ports[0].containerPort = 'five thousand';
    c.imagePullPolicy = 'Sometimes';
    c.livenessProbe.httpGet.paht = '/healthz';
    const problems = validateObject(sts);
    expect(problems.join('\n')).toMatch(/containerPort must be integer/);
    expect(problems.join('\n')).toMatch(/imagePullPolicy must be equal to one of the allowed values/);
    expect(problems).toContain('StatefulSet/snapyard: /spec/template/spec/containers/0/livenessProbe/httpGet/paht: unknown field');
  });

  it('the resolver refuses a missing resource, a patch that hits nothing and an unsupported key', () => {
    const dir = tmpDir();
    const write = (f: string, text: string) => {
      mkdirSync(join(dir, f, '..'), { recursive: true });
      writeFileSync(join(dir, f), text);
    };
    write('a/kustomization.yaml', 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [cm.yaml, gone.yaml]\n');
    write('a/cm.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n');
    expect(() => resolveKustomization(join(dir, 'a'))).toThrow(/resource gone.yaml does not exist/);
    write('b/kustomization.yaml', 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../a/cm.yaml]\npatches: [{path: p.yaml}]\n');
    write('b/p.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\ndata: {k: v}\n');
    expect(() => resolveKustomization(join(dir, 'b'))).toThrow(/targets ConfigMap\/y, which no resource defines/);
    write('c/kustomization.yaml', 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nconfigMapGenerator: []\n');
    expect(() => resolveKustomization(join(dir, 'c'))).toThrow(/unsupported key configMapGenerator/);
  });

  it('the registry: probes on /healthz and /readyz, Service and PodDisruptionBudget select its pods, the image is the snapyard image', () => {
    const objs = resolveKustomization(join(K8S, 'base'));
    const sts = find(objs, 'StatefulSet', 'snapyard')!;
    const c = sts.spec.template.spec.containers.find((x: { name: string }) => x.name === 'registry');
    expect(c.image).toBe('snapyard:0.1.0');
    expect(c.livenessProbe.httpGet.path).toBe('/healthz');
    expect(c.readinessProbe.httpGet.path).toBe('/readyz');
    const labels = sts.spec.template.metadata.labels;
    const svc = find(objs, 'Service', 'snapyard')!;
    for (const [k, v] of Object.entries(svc.spec.selector as Record<string, string>)) expect(labels[k]).toBe(v);
    const ports = c.ports.map((p: { name: string }) => p.name);
    for (const p of svc.spec.ports) expect(ports).toContain(p.targetPort);
    const pdb = find(objs, 'PodDisruptionBudget', 'snapyard')!;
    for (const [k, v] of Object.entries(pdb.spec.selector.matchLabels as Record<string, string>)) expect(labels[k]).toBe(v);
    expect(sts.spec.volumeClaimTemplates.map((v: { metadata: { name: string } }) => v.metadata.name)).toContain('data');
  });

  it("the registry's config file passes serve's own check, and every file it names is mounted from an object that has it", () => {
    for (const dir of ['base', 'overlays/tls-ingress', 'overlays/replicas']) {
      const objs = resolveKustomization(join(K8S, dir));
      const sts = find(objs, 'StatefulSet', 'snapyard')!;
      const c = sts.spec.template.spec.containers[0];
      const configPath = c.args[c.args.indexOf('--config') + 1] as string;
      /** The object key a path in the container reads, through its mounts. */
      const fileAt = (path: string): string | undefined => {
        for (const m of c.volumeMounts) {
          if (!path.startsWith(`${m.mountPath}/`)) continue;
          const v = sts.spec.template.spec.volumes.find((x: { name: string }) => x.name === m.name);
          const o = v?.configMap ? find(objs, 'ConfigMap', v.configMap.name) : v?.secret ? find(objs, 'Secret', v.secret.secretName) : undefined;
          return ({ ...o?.data, ...o?.stringData } as Record<string, string>)[path.slice(m.mountPath.length + 1)];
        }
        return undefined;
      };
      const text = fileAt(configPath);
      expect(text, `${dir}: ${configPath} is mounted`).toBeTypeOf('string');
      const tmp = tmpDir();
      writeFileSync(join(tmp, 'config.yaml'), text!);
      const config = readConfigFile(join(tmp, 'config.yaml'));
      for (const key of ['htpasswd', 'access', 'tokenSecret'] as const) {
        expect(fileAt(String(config[key])), `${dir}: ${key} ${config[key]} is mounted`).toBeTypeOf('string');
      }
      expect(config.data).toBe(c.volumeMounts.find((m: { name: string }) => m.name === 'data').mountPath);
      const metricsPort = Number(String(config.metricsAddr).split(':').pop());
      expect(c.ports.find((p: { name: string }) => p.name === 'metrics').containerPort).toBe(metricsPort);
      expect(c.ports.find((p: { name: string }) => p.name === 'http').containerPort).toBe(config.port);
    }
  });

  it('the replicas overlay runs three pods on the shared backends, each advertising its own address, two kept through drains', () => {
    const objs = resolveKustomization(join(K8S, 'overlays/replicas'));
    const sts = find(objs, 'StatefulSet', 'snapyard')!;
    expect(sts.spec.replicas).toBe(3);
    const c = sts.spec.template.spec.containers[0];
    const secretName = c.envFrom[0].secretRef.name;
    const secret = find(objs, 'Secret', secretName)!;
    expect(Object.keys(secret.stringData).sort()).toEqual(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'SNAPYARD_METADATA', 'SNAPYARD_STORE']);
    expect(secret.stringData.SNAPYARD_METADATA).toMatch(/^postgres:\/\//);
    expect(secret.stringData.SNAPYARD_STORE).toMatch(/^s3:\/\/[^/?]+\/?[^?]*\?endpoint=/);
    const env = Object.fromEntries(c.env.map((e: { name: string; value?: string; valueFrom?: unknown }) => [e.name, e.value ?? e.valueFrom]));
    expect(env.POD_IP).toEqual({ fieldRef: { fieldPath: 'status.podIP' } });
    // $(POD_IP) expands only for a variable defined before it in the list.
    expect(c.env.findIndex((e: { name: string }) => e.name === 'POD_IP')).toBeLessThan(c.env.findIndex((e: { name: string }) => e.name === 'SNAPYARD_ADVERTISE_URL'));
    const port = c.ports.find((p: { name: string }) => p.name === 'http').containerPort;
    expect(env.SNAPYARD_ADVERTISE_URL).toBe(`http://$(POD_IP):${port}`);
    expect(find(objs, 'PodDisruptionBudget', 'snapyard')!.spec.minAvailable).toBe(2);
  });

  it('the TLS overlay adds an Ingress to the Service and points token challenges at the public https URL', () => {
    const objs = resolveKustomization(join(K8S, 'overlays/tls-ingress'));
    const ing = find(objs, 'Ingress', 'snapyard')!;
    const host = ing.spec.tls[0].hosts[0];
    const backend = ing.spec.rules[0].http.paths[0].backend.service;
    const svc = find(objs, 'Service', backend.name)!;
    expect(svc.spec.ports.map((p: { name: string }) => p.name)).toContain(backend.port.name);
    const env = find(objs, 'StatefulSet', 'snapyard')!.spec.template.spec.containers[0].env;
    expect(env).toContainEqual({ name: 'SNAPYARD_AUTH_REALM', value: `https://${host}/token` });
  });

  it('deploy/snapyard.example.yaml passes serve\'s check and mentions every serve setting', () => {
    const file = join(DEPLOY, 'snapyard.example.yaml');
    expect(() => readConfigFile(file)).not.toThrow();
    const text = readFileSync(file, 'utf8');
    for (const s of SETTINGS) expect(text, `the example mentions ${s.key}`).toMatch(new RegExp(`^#? ?${s.key}:`, 'm'));
  });
});


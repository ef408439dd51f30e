/**
 * A small kustomize for the tests (no kustomize binary here): resolves a
 * kustomization directory into the objects `kubectl apply -k DIR` would apply.
 * Supports what deploy/kubernetes uses (resources: files and directories,
 * patches by path or inline (strategic merge, matched by kind and name, or a
 * target), images, labels, commonLabels, namespace) and refuses every other
 * key, so nothing in a kustomization is silently ignored.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

export type K8sObject = Record<string, any> & { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } };

const KNOWN = new Set(['apiVersion', 'kind', 'resources', 'patches', 'patchesStrategicMerge', 'images', 'labels', 'commonLabels', 'namespace']);

/** Every YAML document of a file (empty documents skipped); a YAML error throws naming the file. */
export function readYamlDocs(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'));
  const out: unknown[] = [];
  for (const d of docs) {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

function asObject(v: unknown, where: string): K8sObject {
  const o = v as K8sObject;
  if (!o || typeof o !== 'object' || typeof o.apiVersion !== 'string' || typeof o.kind !== 'string' || typeof o.metadata?.name !== 'string') {
    throw new Error(`${where}: not a Kubernetes object (apiVersion, kind, metadata.name)`);
  }
  return o;
}

export function objectId(o: K8sObject): string {
  return `${o.kind}/${o.metadata.name}`;
}

/** The objects `kubectl apply -k dir` applies. Throws on a missing resource, a patch without a target, an unknown key. */
export function resolveKustomization(dir: string): K8sObject[] {
  const kfile = join(dir, 'kustomization.yaml');
  if (!existsSync(kfile)) throw new Error(`${dir}: no kustomization.yaml`);
  const k = readYamlDocs(kfile)[0] as Record<string, any>;
  for (const key of Object.keys(k)) if (!KNOWN.has(key)) throw new Error(`${kfile}: unsupported key ${key}`);
  if (k.kind !== 'Kustomization') throw new Error(`${kfile}: kind is not Kustomization`);

  let objects: K8sObject[] = [];
  for (const r of (k.resources ?? []) as string[]) {
    const p = resolve(dir, r);
    if (!existsSync(p)) throw new Error(`${kfile}: resource ${r} does not exist`);
    if (statSync(p).isDirectory()) objects.push(...resolveKustomization(p));
    else objects.push(...readYamlDocs(p).map((d) => asObject(d, p)));
  }
  const seen = new Set<string>();
  for (const o of objects) {
    if (seen.has(objectId(o))) throw new Error(`${kfile}: ${objectId(o)} is defined twice`);
    seen.add(objectId(o));
  }

  const patches: { patch: K8sObject; target?: { kind?: string; name?: string } }[] = [];
  for (const p of (k.patches ?? []) as { path?: string; patch?: string; target?: { kind?: string; name?: string } }[]) {
    const text = p.path !== undefined ? readFileSync(resolve(dir, p.path), 'utf8') : p.patch;
    if (text === undefined) throw new Error(`${kfile}: a patch needs path or patch`);
    const doc = parseAllDocuments(text)[0]!.toJS() as K8sObject;
    if (Array.isArray(doc)) throw new Error(`${kfile}: JSON 6902 patches are not supported here`);
    patches.push({ patch: doc, ...(p.target ? { target: p.target } : {}) });
  }
  for (const p of (k.patchesStrategicMerge ?? []) as string[]) patches.push({ patch: asObject(readYamlDocs(resolve(dir, p))[0], p) });
  for (const { patch, target } of patches) {
    const kind = target?.kind ?? patch.kind;
    const name = target?.name ?? patch.metadata?.name;
    const i = objects.findIndex((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
    if (i < 0) throw new Error(`${kfile}: a patch targets ${kind}/${name}, which no resource defines`);
    objects = objects.map((o) => (o.kind === kind && (name === undefined || o.metadata.name === name) ? (strategicMerge(o, patch) as K8sObject) : o));
  }

  if (k.namespace) objects = objects.map((o) => ({ ...o, metadata: { ...o.metadata, namespace: k.namespace } }));
  const labelSets: { pairs: Record<string, string>; selectors: boolean; templates: boolean }[] = [];
  if (k.commonLabels) labelSets.push({ pairs: k.commonLabels, selectors: true, templates: true });
  for (const l of (k.labels ?? []) as { pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }[]) {
    labelSets.push({ pairs: l.pairs, selectors: l.includeSelectors === true, templates: l.includeSelectors === true || l.includeTemplates === true });
  }
  for (const l of labelSets) objects = objects.map((o) => addLabels(o, l.pairs, l.selectors, l.templates));
  for (const img of (k.images ?? []) as { name: string; newName?: string; newTag?: string; digest?: string }[]) {
    objects = objects.map((o) => setImage(o, img));
  }
  return objects;
}

/** A strategic merge patch as kustomize applies the common cases: maps merge, lists of named items merge by name, null deletes, other lists are replaced. */
export function strategicMerge(base: unknown, patch: unknown): unknown {
  if (patch === null) return undefined;
  if (Array.isArray(patch)) {
    if (!Array.isArray(base) || !patch.every(named) || !base.every(named)) return structuredClone(patch);
    const out = base.map((b) => {
      const p = patch.find((x) => x.name === b.name);
      return p ? strategicMerge(b, p) : structuredClone(b);
    });
    for (const p of patch) if (!base.some((b) => b.name === p.name)) out.push(structuredClone(p));
    return out;
  }
  if (isMap(patch)) {
    const out: Record<string, unknown> = isMap(base) ? structuredClone(base) : {};
    for (const [key, v] of Object.entries(patch)) {
      const merged = strategicMerge(out[key], v);
      if (merged === undefined) delete out[key];
      else out[key] = merged;
    }
    return out;
  }
  return patch;
}

function named(x: unknown): x is { name: string } {
  return isMap(x) && typeof x.name === 'string';
}

function isMap(x: unknown): x is Record<string, any> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The pod template of a workload, or null. */
export function podTemplate(o: K8sObject): { metadata?: { labels?: Record<string, string> }; spec: Record<string, any> } | null {
  return ['StatefulSet', 'Deployment', 'DaemonSet', 'ReplicaSet', 'Job'].includes(o.kind) ? o.spec?.template ?? null : null;
}

/** Every container (init containers first) of a workload's pod template. */
export function containersOf(o: K8sObject): Record<string, any>[] {
  const t = podTemplate(o);
  return t ? [...(t.spec.initContainers ?? []), ...(t.spec.containers ?? [])] : [];
}

function addLabels(o: K8sObject, pairs: Record<string, string>, selectors: boolean, templates: boolean): K8sObject {
  const c = structuredClone(o);
  c.metadata.labels = { ...c.metadata.labels, ...pairs };
  const t = podTemplate(c);
  if (templates && t) t.metadata = { ...t.metadata, labels: { ...t.metadata?.labels, ...pairs } };
  if (selectors) {
    if (c.kind === 'Service') c.spec.selector = { ...c.spec.selector, ...pairs };
    else if (c.spec?.selector) c.spec.selector.matchLabels = { ...c.spec.selector.matchLabels, ...pairs };
  }
  return c;
}

function setImage(o: K8sObject, img: { name: string; newName?: string; newTag?: string; digest?: string }): K8sObject {
  const c = structuredClone(o);
  for (const ctr of containersOf(c)) {
    const image = String(ctr.image);
    const m = /^([^@]+?)(?::([^:/@]+))?(?:@(.+))?$/.exec(image)!;
    if (m[1] !== img.name) continue;
    const name = img.newName ?? img.name;
    ctr.image = img.digest ? `${name}@${img.digest}` : `${name}:${img.newTag ?? m[2] ?? 'latest'}`;
  }
  return c;
}

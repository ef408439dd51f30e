/**
 * Validates a Kubernetes object against the API schemas (kubernetes-models),
 * strictly: besides the schema's own checks (types, enums, required fields),
 * a field the schema does not know is an error, as with `kubectl apply`'s
 * strict field validation. The generated validators read every property the
 * schema knows, so the validator runs once more over a proxy that records
 * what it reads; whatever it never read is unknown.
 */
import { createRequire } from 'node:module';
import type { K8sObject } from './kustomize.js';

const require = createRequire(import.meta.url);

type Validatable = { validate(): void };
type ModelClass = { new (o: unknown): Validatable; prototype: Validatable };

function modelClass(o: K8sObject): ModelClass {
  let mod: Record<string, unknown>;
  try {
    mod = require(`kubernetes-models/${o.apiVersion}/${o.kind}`) as Record<string, unknown>;
  } catch {
    throw new Error(`${o.kind}/${o.metadata.name}: no schema for apiVersion ${o.apiVersion} kind ${o.kind}`);
  }
  const cls = mod[o.kind] as ModelClass | undefined;
  if (!cls) throw new Error(`${o.kind}/${o.metadata.name}: no schema for kind ${o.kind}`);
  return cls;
}

/** The problems with an object (empty: valid). */
export function validateObject(o: K8sObject): string[] {
  const cls = modelClass(o);
  const problems: string[] = [];
  try {
    new cls(o).validate();
  } catch (e) {
    problems.push((e as Error).message);
  }
  const read = new WeakMap<object, Set<PropertyKey>>();
  const mark = (t: object, k: PropertyKey) => {
    let s = read.get(t);
    if (!s) read.set(t, (s = new Set()));
    s.add(k);
  };
  const wrap = (v: unknown): unknown =>
    typeof v === 'object' && v !== null
      ? new Proxy(v, {
          get(t, k, r) {
            mark(t, k);
            return wrap(Reflect.get(t, k, r));
          },
          has(t, k) {
            mark(t, k);
            return Reflect.has(t, k);
          },
        })
      : v;
  try {
    cls.prototype.validate.call(wrap(o) as Validatable);
  } catch {
    /* reported above */
  }
  const walk = (v: unknown, path: string) => {
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${path}/${i}`));
    else if (typeof v === 'object' && v !== null) {
      const seen = read.get(v);
      for (const [k, x] of Object.entries(v)) {
        if (!seen?.has(k)) problems.push(`${path}/${k}: unknown field`);
        else walk(x, `${path}/${k}`);
      }
    }
  };
  walk(o, '');
  return problems.map((p) => `${o.kind}/${o.metadata.name}: ${p}`);
}

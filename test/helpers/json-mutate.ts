/**
 * Shared generators for the manifest fuzz suite: mutations of a JSON
 * document (replace / delete / add at a random path, wrong types, bad
 * digests, unicode, huge arrays, deep nesting) and of its text (duplicate
 * keys, truncation, invalid UTF-8, byte flips).
 */
import fc from 'fast-check';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Values a registry must treat with suspicion. */
export const hostileValue: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(
    null, true, 0, -1, 1e308, -0, 2 ** 53 + 1, 1.5, '', 'sha256:', 'sha256:' + 'A'.repeat(64), 'sha256:' + 'g'.repeat(64), 'sha512:' + 'a'.repeat(128),
    'sha256:' + 'a'.repeat(63), 'md5:d41d8cd98f00b204e9800998ecf8427e', '../../etc/passwd', '\u0000', '\ud800', '\u202e\u0644\u0627', '🦀'.repeat(100),
    'application/vnd.oci.image.layer.nondistributable.v1.tar', 'application/vnd.oci.image.index.v1+json', [], {}, [[[]]], { digest: 'sha256:' },
  ),
  fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>,
  fc.string({ unit: 'binary', maxLength: 40 }),
);

export type JsonMutation =
  | { op: 'replace'; path: number[]; value: Json }
  | { op: 'delete'; path: number[] }
  | { op: 'add'; path: number[]; key: string; value: Json }
  | { op: 'grow'; path: number[]; times: number }
  | { op: 'nest'; path: number[]; depth: number };

const pathArb = fc.array(fc.nat({ max: 1000 }), { minLength: 0, maxLength: 5 });

export const jsonMutationArb: fc.Arbitrary<JsonMutation> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('replace' as const), path: pathArb, value: hostileValue }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('delete' as const), path: pathArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('add' as const), path: pathArb, key: fc.oneof(fc.constantFrom('mediaType', 'digest', 'size', 'urls', 'manifests', 'layers', 'subject', '__proto__', 'constructor'), fc.string()), value: hostileValue }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('grow' as const), path: pathArb, times: fc.constantFrom(100, 5000, 30000) }) },
  // Deeper nesting than JSON.stringify can build is a text mutation (deepNest).
  { weight: 1, arbitrary: fc.record({ op: fc.constant('nest' as const), path: pathArb, depth: fc.constantFrom(50, 1000) }) },
);

/** Follows `path` (indexes into the keys / elements at each level) to a container and a key in it. */
function locate(root: Json, path: number[]): { parent: Json[] | Record<string, Json>; key: string | number } | null {
  let node: Json = root;
  let parent: Json[] | Record<string, Json> | null = null;
  let key: string | number = '';
  for (const step of path) {
    if (Array.isArray(node)) {
      if (node.length === 0) break;
      parent = node;
      key = step % node.length;
      node = node[key]!;
    } else if (node !== null && typeof node === 'object') {
      const keys = Object.keys(node);
      if (keys.length === 0) break;
      parent = node;
      key = keys[step % keys.length]!;
      node = node[key]!;
    } else break;
  }
  return parent ? { parent, key } : null;
}

function nested(depth: number, inner: Json): Json {
  let v: Json = inner;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
}

/** Applies JSON mutations to a deep copy of `doc`. */
export function mutateJson(doc: Json, ms: JsonMutation[]): Json {
  const root = JSON.parse(JSON.stringify(doc)) as Json;
  for (const m of ms) {
    const at = locate(root, m.path);
    if (!at) continue;
    const { parent, key } = at;
    const set = (v: Json) => {
      if (Array.isArray(parent)) parent[key as number] = v;
      else Object.defineProperty(parent, key as string, { value: v, enumerable: true, writable: true, configurable: true });
    };
    const cur = Array.isArray(parent) ? parent[key as number]! : parent[key as string]!;
    switch (m.op) {
      case 'replace':
        set(m.value);
        break;
      case 'delete':
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete parent[key as string];
        break;
      case 'add':
        if (cur !== null && typeof cur === 'object' && !Array.isArray(cur)) Object.defineProperty(cur, m.key, { value: m.value, enumerable: true, writable: true, configurable: true });
        else if (Array.isArray(cur)) cur.push(m.value);
        break;
      case 'grow':
        if (Array.isArray(cur) && cur.length > 0) set(Array.from({ length: m.times }, (_, i) => cur[i % cur.length]!));
        break;
      case 'nest':
        set(nested(m.depth, cur));
        break;
    }
  }
  return root;
}

export type TextMutation =
  | { op: 'duplicateKey'; key: string; value: string }
  | { op: 'truncate'; keep: number }
  | { op: 'flip'; at: number; byte: number }
  | { op: 'prefix'; bytes: number[] }
  /** A key whose value is `depth` nested arrays (or objects), spliced in as text. */
  | { op: 'deepNest'; key: string; depth: number; objects: boolean };

export const textMutationArb: fc.Arbitrary<TextMutation> = fc.oneof(
  fc.record({ op: fc.constant('duplicateKey' as const), key: fc.constantFrom('schemaVersion', 'mediaType', 'layers', 'config', 'manifests'), value: fc.constantFrom('3', '"x"', '[]', 'null', '{"digest":"sha256:00"}') }),
  fc.record({ op: fc.constant('truncate' as const), keep: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('prefix' as const), bytes: fc.constantFrom<number[]>([0xef, 0xbb, 0xbf], [0xff, 0xfe], [0x20, 0x0a], [0xc3, 0x28]) }),
  fc.record({ op: fc.constant('deepNest' as const), key: fc.constantFrom('annotations', 'layers', 'manifests', 'config', 'extra'), depth: fc.constantFrom(10_000, 100_000, 1_000_000), objects: fc.boolean() }),
);

/** Applies a text-level mutation to a serialized document. */
export function mutateText(body: Buffer, m: TextMutation): Buffer {
  switch (m.op) {
    case 'duplicateKey': {
      const s = body.toString('utf8');
      return Buffer.from(s.startsWith('{') ? `{"${m.key}":${m.value},${s.slice(1)}` : s);
    }
    case 'truncate':
      return body.subarray(0, Math.floor(body.byteLength * m.keep));
    case 'flip': {
      if (body.byteLength === 0) return body;
      const b = Buffer.from(body);
      b[m.at % b.byteLength] = m.byte;
      return b;
    }
    case 'prefix':
      return Buffer.concat([Buffer.from(m.bytes), body]);
    case 'deepNest': {
      const s = body.toString('utf8');
      if (!s.startsWith('{')) return body;
      const open = m.objects ? '{"a":'.repeat(m.depth) : '['.repeat(m.depth);
      const close = m.objects ? '}'.repeat(m.depth) : ']'.repeat(m.depth);
      return Buffer.from(`{"${m.key}":${open}1${close},${s.slice(1)}`);
    }
  }
}

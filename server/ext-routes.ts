import { checkName } from './names.js';

/**
 * snapyard's own endpoints (the delta protocol, docs/delta-protocol.md) live
 * under /snapyard/v1/, apart from the OCI routes under /v2/. Their last path
 * component starts with "_", which no repository name component can, so
 * `<name>` is never ambiguous.
 */
export type ExtRoute =
  | { kind: 'delta'; name: string }
  | { kind: 'chunks'; name: string }
  | { kind: 'missing'; name: string }
  | { kind: 'upload'; name: string }
  | { kind: 'commit'; name: string }
  | { kind: 'blob-manifests'; name: string; digest: string };

const ROUTES: Array<[RegExp, (m: RegExpExecArray) => ExtRoute]> = [
  [/^\/snapyard\/v1\/(.+)\/_delta$/, (m) => ({ kind: 'delta', name: m[1]! })],
  [/^\/snapyard\/v1\/(.+)\/_chunks$/, (m) => ({ kind: 'chunks', name: m[1]! })],
  [/^\/snapyard\/v1\/(.+)\/_missing$/, (m) => ({ kind: 'missing', name: m[1]! })],
  [/^\/snapyard\/v1\/(.+)\/_upload$/, (m) => ({ kind: 'upload', name: m[1]! })],
  [/^\/snapyard\/v1\/(.+)\/_commit$/, (m) => ({ kind: 'commit', name: m[1]! })],
  [/^\/snapyard\/v1\/(.+)\/_blobs\/([^/]+)\/manifests$/, (m) => ({ kind: 'blob-manifests', name: m[1]!, digest: m[2]! })],
];

export function matchExtRoute(path: string): ExtRoute | null {
  for (const [re, make] of ROUTES) {
    const m = re.exec(path);
    if (!m) continue;
    const r = make(m);
    checkName(r.name);
    return r;
  }
  return null;
}

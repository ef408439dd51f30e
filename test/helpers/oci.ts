import { createHash, randomBytes } from 'node:crypto';

export const sha = (b: Uint8Array | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export const EMPTY_CONFIG = { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha('{}'), size: 2 };
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

/** Deterministic pseudo-random bytes (xorshift32), for reproducible test data. */
export function prng(n: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

export function random(n: number): Buffer {
  return randomBytes(n);
}

export async function errorCode(r: Response): Promise<string> {
  const body = (await r.json()) as { errors: Array<{ code: string; message: string }> };
  return body.errors[0]!.code;
}

/** A thin OCI client over fetch, for tests. */
export class Oci {
  constructor(readonly base: string) {}

  req(method: string, path: string, init: { body?: Uint8Array | string; headers?: Record<string, string> } = {}): Promise<Response> {
    return fetch(`${this.base}${path}`, { method, headers: init.headers, body: init.body, redirect: 'manual' } as RequestInit);
  }

  async pushBlob(repo: string, data: Uint8Array | string): Promise<string> {
    const digest = sha(data);
    const r = await this.req('POST', `/v2/${repo}/blobs/uploads/?digest=${digest}`, {
      body: data,
      headers: { 'Content-Type': 'application/octet-stream' },
    });
    if (r.status !== 201) throw new Error(`push blob: ${r.status} ${await r.text()}`);
    return digest;
  }

  async pushManifest(repo: string, ref: string, manifest: unknown, mediaType = OCI_MANIFEST): Promise<{ digest: string; res: Response }> {
    const body = typeof manifest === 'string' ? manifest : JSON.stringify(manifest);
    const res = await this.req('PUT', `/v2/${repo}/manifests/${ref}`, { body, headers: { 'Content-Type': mediaType } });
    if (res.status !== 201) throw new Error(`push manifest: ${res.status} ${await res.text()}`);
    return { digest: res.headers.get('docker-content-digest')!, res };
  }

  /** Pushes config + one layer and a manifest referencing them; returns the manifest digest and body. */
  async pushImage(repo: string, ref: string, layer: Uint8Array, extra: Record<string, unknown> = {}): Promise<{ digest: string; body: string; layerDigest: string }> {
    await this.pushBlob(repo, '{}');
    const layerDigest = await this.pushBlob(repo, layer);
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: EMPTY_CONFIG,
      layers: [{ mediaType: 'application/octet-stream', digest: layerDigest, size: layer.byteLength }],
      ...extra,
    };
    const body = JSON.stringify(manifest);
    const { digest } = await this.pushManifest(repo, ref, body);
    return { digest, body, layerDigest };
  }
}

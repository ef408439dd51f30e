/**
 * Images on a registry speaking the distribution API (docker://HOST/REPO:TAG),
 * through client/registry.ts's Registry pointed at it (Basic or Bearer auth,
 * TLS, --insecure). Blobs may redirect to another host (a CDN): the redirect
 * is followed without the registry's credentials.
 */
import type { Readable } from 'node:stream';
import { request as undiciRequest } from 'undici';
import { SnapyardError } from '../../storage/errors.js';
import type { Registry } from '../registry.js';
import { MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, resolveImage, type FetchedManifest, type Platform } from './image-manifest.js';
import type { ImageSource, SourceImage } from './image-source.js';

const MAX_TAGS = 100_000;

async function readCapped(body: AsyncIterable<Uint8Array>, limit: number, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    n += c.byteLength;
    if (n > limit) throw new SnapyardError('LIMIT_EXCEEDED', `${what} is larger than ${limit} bytes`);
    parts.push(Buffer.from(c));
  }
  return Buffer.concat(parts);
}

export class RegistrySource implements ImageSource {
  readonly name: string;

  constructor(
    private readonly reg: Registry,
    private readonly repo: string,
    readonly reference: string | null,
  ) {
    this.name = `docker://${reg.base.host}/${repo}`;
  }

  private async manifest(reference: string): Promise<FetchedManifest> {
    const res = await this.reg.request('GET', `/v2/${this.repo}/manifests/${reference}`, { headers: { accept: MANIFEST_ACCEPT } });
    const declared = Number(res.headers['content-length'] ?? 0);
    if (declared > MAX_MANIFEST_BYTES) {
      await res.body.dump().catch(() => undefined);
      throw new SnapyardError('LIMIT_EXCEEDED', `${this.name}:${reference}: manifest of ${declared} bytes (at most ${MAX_MANIFEST_BYTES})`);
    }
    const bytes = await readCapped(res.body, MAX_MANIFEST_BYTES, `${this.name}:${reference} manifest`);
    return { bytes, mediaType: String(res.headers['content-type'] ?? '') };
  }

  private async blob(digest: string): Promise<Readable> {
    const res = await this.reg.request('GET', `/v2/${this.repo}/blobs/${digest}`, { ok: (s) => (s >= 200 && s < 300) || [301, 302, 303, 307, 308].includes(s) });
    if (res.statusCode < 300) return res.body;
    await res.body.dump().catch(() => undefined);
    const location = res.headers.location;
    if (typeof location !== 'string') throw new SnapyardError('REGISTRY_ERROR', `${this.name}: blob ${digest}: redirect without a Location`);
    const target = new URL(location, this.reg.base);
    const r2 = await undiciRequest(target, { method: 'GET', maxRedirections: 0 } as Parameters<typeof undiciRequest>[1]);
    if (r2.statusCode !== 200) {
      await r2.body.dump().catch(() => undefined);
      throw new SnapyardError('REGISTRY_ERROR', `${this.name}: blob ${digest}: ${target.host} answered HTTP ${r2.statusCode}`);
    }
    return r2.body;
  }

  async tags(): Promise<string[]> {
    const out: string[] = [];
    let path: string | null = `/v2/${this.repo}/tags/list?n=1000`;
    while (path !== null) {
      const res = await this.reg.request('GET', path);
      const link = String(res.headers.link ?? '');
      const j = JSON.parse((await readCapped(res.body, MAX_MANIFEST_BYTES, `${this.name} tag list`)).toString('utf8')) as { tags?: unknown };
      if (j.tags !== null && j.tags !== undefined && !Array.isArray(j.tags)) throw new SnapyardError('REGISTRY_ERROR', `${this.name}: the tag list is not a list`);
      for (const t of (j.tags ?? []) as unknown[]) if (typeof t === 'string') out.push(t);
      if (out.length > MAX_TAGS) throw new SnapyardError('LIMIT_EXCEEDED', `${this.name}: more than ${MAX_TAGS} tags`);
      const next = /<([^>]+)>;\s*rel="?next"?/.exec(link);
      path = next ? new URL(next[1]!, this.reg.base).pathname + new URL(next[1]!, this.reg.base).search : null;
    }
    return out;
  }

  async image(reference: string | null, platform: Platform): Promise<SourceImage> {
    const ref = reference ?? 'latest';
    const img = await resolveImage((r) => this.manifest(r), ref, platform, `${this.name}:${ref}`);
    return {
      manifestDigest: img.manifestDigest,
      layers: img.layers.map((d) => ({ digest: d.digest, label: d.digest, open: () => this.blob(d.digest) })),
    };
  }

  async close(): Promise<void> {
    await this.reg.close();
  }
}

/**
 * The client's view of a snapyard server: OCI calls (/v2/) and the delta
 * protocol (/snapyard/v1/), over one undici Pool (keep-alive, a few
 * connections). Errors in the OCI error format become RegistryError with the
 * server's code; a server that cannot be reached is REGISTRY_UNREACHABLE.
 */
import { Readable } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import { SnapyardError } from '../storage/errors.js';

export class RegistryError extends SnapyardError {
  constructor(
    readonly status: number,
    readonly ociCode: string,
    message: string,
  ) {
    super('REGISTRY_ERROR', `${ociCode} (HTTP ${status}): ${message}`);
    this.name = 'RegistryError';
  }
}

export interface RequestOptions {
  body?: string | Buffer | Uint8Array | AsyncIterable<Uint8Array> | null;
  headers?: Record<string, string>;
  /** Statuses that are not errors (default: 2xx). */
  ok?: (status: number) => boolean;
}

export class Registry {
  private readonly pool: Pool;
  readonly base: URL;

  constructor(url: string, opts: { connections?: number } = {}) {
    try {
      this.base = new URL(url);
    } catch {
      throw new SnapyardError('INVALID_ARGUMENT', `registry URL ${JSON.stringify(url)} is not a URL`);
    }
    this.pool = new Pool(this.base.origin, { connections: opts.connections ?? 6, pipelining: 1, bodyTimeout: 600_000, headersTimeout: 120_000 });
  }

  async request(method: Dispatcher.HttpMethod, path: string, opts: RequestOptions = {}): Promise<Dispatcher.ResponseData> {
    let res: Dispatcher.ResponseData;
    try {
      const body = opts.body && typeof opts.body === 'object' && Symbol.asyncIterator in opts.body ? Readable.from(opts.body as AsyncIterable<Uint8Array>) : (opts.body as string | Uint8Array | null | undefined) ?? null;
      res = await this.pool.request({ method, path, body, headers: opts.headers ?? {} });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOTFOUND' || err.code === 'EHOSTUNREACH') {
        throw new SnapyardError('REGISTRY_UNREACHABLE', `cannot reach the registry at ${this.base.origin}: ${err.code}`);
      }
      throw e;
    }
    const ok = opts.ok ?? ((s: number) => s >= 200 && s < 300);
    if (!ok(res.statusCode)) {
      const text = await res.body.text().catch(() => '');
      let code = 'UNKNOWN';
      let message = text.slice(0, 500);
      try {
        const j = JSON.parse(text) as { errors?: Array<{ code: string; message: string }> };
        if (j.errors?.[0]) {
          code = j.errors[0].code;
          message = j.errors[0].message;
        }
      } catch {
        /* not JSON */
      }
      throw new RegistryError(res.statusCode, code, `${method} ${path}: ${message}`);
    }
    return res;
  }

  async json<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    return (await res.body.json()) as T;
  }

  /** A manifest's bytes, media type and digest (tag or digest reference). */
  async getManifest(repo: string, reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    const res = await this.request('GET', `/v2/${repo}/manifests/${reference}`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
    });
    const bytes = Buffer.from(await res.body.arrayBuffer());
    return { bytes, mediaType: String(res.headers['content-type'] ?? ''), digest: String(res.headers['docker-content-digest'] ?? '') };
  }

  async putManifest(repo: string, reference: string, bytes: Buffer, mediaType: string, source?: string): Promise<string> {
    const headers: Record<string, string> = { 'content-type': mediaType };
    if (source) headers['x-snapyard-source'] = source;
    const res = await this.request('PUT', `/v2/${repo}/manifests/${reference}`, { body: bytes, headers });
    await res.body.dump();
    return String(res.headers['docker-content-digest'] ?? '');
  }

  /** A small blob in one request (POST with ?digest=), unless the repository already has it. */
  async putSmallBlob(repo: string, digest: string, bytes: Buffer): Promise<void> {
    const head = await this.request('HEAD', `/v2/${repo}/blobs/${digest}`, { ok: (s) => s === 200 || s === 404 });
    await head.body.dump();
    if (head.statusCode === 200) return;
    const res = await this.request('POST', `/v2/${repo}/blobs/uploads/?digest=${encodeURIComponent(digest)}`, {
      body: bytes,
      headers: { 'content-type': 'application/octet-stream' },
    });
    await res.body.dump();
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

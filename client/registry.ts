/**
 * The client's view of a snapyard server: OCI calls (/v2/) and the delta
 * protocol (/snapyard/v1/), over one undici Pool (keep-alive, a few
 * connections), authenticated as the server asks (Basic, or bearer tokens
 * from its token endpoint: client/auth.ts), over TLS verified against the
 * system roots plus --ca-cert. Errors in the OCI error format become
 * RegistryError with the server's code; a server that cannot be reached is
 * REGISTRY_UNREACHABLE, a connection lost mid-way CONNECTION_LOST.
 */
import { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { existsSync, readFileSync } from 'node:fs';
import type { Dispatcher } from 'undici';
import { Agent, Pool } from './undici-lite.js';
import type { z } from 'zod';
import { parseAnswer } from '../storage/protocol/api.js';
import { SnapyardError } from '../storage/errors.js';
import { Authorizer, repoOfPath } from './auth.js';
import type { Credentials } from './credentials.js';

export interface RegistryOptions {
  connections?: number;
  /** Credentials to log in with (client/credentials.ts resolves them). */
  creds?: Credentials | null;
  /** Extra trusted CA certificates (PEM), besides the system roots. */
  caCert?: string;
  /** Plain http for a host given without a scheme, and no certificate check on https. */
  insecure?: boolean;
}

const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const LOOPBACK_HOST = /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/;
const NETWORK_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_ABORTED', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);

/** `host[:port][/prefix]` (https, or http with --insecure) or a URL -> the registry's URL. */
export function registryUrlOf(s: string, insecure = false): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(s) ? s : `${insecure ? 'http' : 'https'}://${s}`;
  let u: URL;
  try {
    u = new URL(withScheme);
  } catch {
    throw new SnapyardError('INVALID_ARGUMENT', `registry ${JSON.stringify(s)} is not a URL or host[:port]`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new SnapyardError('INVALID_ARGUMENT', `registry ${JSON.stringify(s)}: only http and https are supported`);
  return u;
}

/** Turns a failure of the connection into a one-line SnapyardError (anything else is passed through). */
export function networkError(e: unknown, origin: string): unknown {
  const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
  const code = err?.code ?? err?.cause?.code;
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'EAI_AGAIN' || code === 'ENETUNREACH') {
    return new SnapyardError('REGISTRY_UNREACHABLE', `cannot reach the registry at ${origin}: ${code}`);
  }
  if (code && NETWORK_CODES.has(code)) return new SnapyardError('CONNECTION_LOST', `the connection to the registry at ${origin} was lost (${code})`);
  if (typeof code === 'string' && /CERT|SELF_SIGNED|TLS|SSL|VERIFY|ISSUER/.test(code)) {
    return new SnapyardError('TLS_FAILED', `TLS with ${origin} failed: ${code} (trust its CA with --ca-cert FILE or SNAPYARD_CA_CERT, or use --insecure)`);
  }
  return e;
}

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
  private readonly agent: Agent;
  private readonly auth: Authorizer;
  readonly base: URL;
  /** The URL's path without a trailing slash: a registry behind https://host/prefix/ is reached under it. */
  private readonly prefix: string;

  constructor(url: string, opts: RegistryOptions = {}) {
    this.base = registryUrlOf(url, opts.insecure === true);
    this.prefix = this.base.pathname.replace(/\/+$/, '');
    const creds = opts.creds ?? null;
    if (creds && this.base.protocol === 'http:' && !LOOPBACK_HOST.test(this.base.hostname) && !opts.insecure) {
      throw new SnapyardError('INVALID_ARGUMENT', `refusing to send credentials over plain http to ${this.base.host}: use https, or --insecure if you mean it`);
    }
    const connect = {
      ...(opts.caCert ? { ca: [...rootCertificates, ...(existsSync(SYSTEM_BUNDLE) ? [readFileSync(SYSTEM_BUNDLE, 'utf8')] : []), opts.caCert] } : {}),
      ...(opts.insecure ? { rejectUnauthorized: false } : {}),
    };
    this.pool = new Pool(this.base.origin, { connections: opts.connections ?? 6, pipelining: 1, bodyTimeout: 600_000, headersTimeout: 120_000, connect });
    this.agent = new Agent({ connect, headersTimeout: 60_000, bodyTimeout: 60_000 });
    this.auth = new Authorizer(creds, async (u, headers) => {
      try {
        const r = await this.agent.request({ origin: u.origin, path: `${u.pathname}${u.search}`, method: 'GET', headers });
        return { status: r.statusCode, text: await r.body.text() };
      } catch (e) {
        throw networkError(e, u.origin);
      }
    });
  }

  async request(method: Dispatcher.HttpMethod, path: string, opts: RequestOptions = {}): Promise<Dispatcher.ResponseData> {
    const streamed = opts.body !== null && opts.body !== undefined && typeof opts.body === 'object' && Symbol.asyncIterator in opts.body;
    const key = repoOfPath(path);
    if (streamed) {
      // A body that cannot be sent twice: learn how the registry authenticates, and hold a push token, first.
      if (!this.auth.known) await this.ping();
      if (key) await this.auth.prepare(key, `repository:${key}:pull,push`);
    }
    let res!: Dispatcher.ResponseData;
    for (let attempt = 0; attempt < 2; attempt++) {
      const authorization = await this.auth.header(key);
      const headers = { ...(opts.headers ?? {}), ...(authorization ? { authorization } : {}) };
      try {
        const body = streamed ? Readable.from(opts.body as AsyncIterable<Uint8Array>) : (opts.body as string | Uint8Array | null | undefined) ?? null;
        res = await this.pool.request({ method, path: this.prefix + path, body, headers });
      } catch (e) {
        throw networkError(e, this.base.origin);
      }
      if (res.statusCode !== 401 || attempt > 0 || streamed) break;
      const retry = await this.auth.unauthorized(key, res.headers['www-authenticate'], authorization).catch(async (e: unknown) => {
        await res.body.dump().catch(() => undefined);
        throw e;
      });
      if (!retry) break; // its body says why
      await res.body.dump().catch(() => undefined);
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

  /** GET /v2/: learns whether and how the registry wants authentication. */
  async ping(): Promise<void> {
    let res: Dispatcher.ResponseData;
    try {
      res = await this.pool.request({ method: 'GET', path: `${this.prefix}/v2/` });
    } catch (e) {
      throw networkError(e, this.base.origin);
    }
    await res.body.dump().catch(() => undefined);
    if (res.statusCode === 401) await this.auth.unauthorized('', res.headers['www-authenticate'], undefined);
  }

  async json<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    return (await res.body.json()) as T;
  }

  /** A JSON call whose answer is checked against one of the shared schemas (storage/protocol/api.ts). */
  async call<T>(method: Dispatcher.HttpMethod, path: string, schema: z.ZodType<T>, body?: unknown): Promise<T> {
    return parseAnswer(schema, await this.json<unknown>(method, path, body), `${method} ${path}`);
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
    await Promise.all([this.pool.close(), this.agent.close()]);
  }
}

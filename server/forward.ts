/**
 * Forwards a request to another replica. An OCI upload session's bytes are
 * chunked as they arrive, in the memory of the replica that opened it
 * (storage/coord/upload-sessions.ts); when a load balancer sends one of its
 * PATCH / PUT / GET / DELETE requests to another replica, that replica
 * relays it to the holder (its `--advertise-url`, recorded with the session)
 * and relays the answer back, the body streamed both ways. A holder that
 * does not answer has lost the session with its process: 404
 * BLOB_UPLOAD_UNKNOWN, and the client starts the upload again.
 *
 * The caller's credentials go along; the holder checks them again (replicas
 * share --token-secret, --htpasswd and --access). A forwarded request is
 * marked and never forwarded again.
 */
import { readFileSync } from 'node:fs';
import { rootCertificates } from 'node:tls';
import { Agent, request } from 'undici';
import { OciError } from './oci-error.js';
import { drain } from './http-util.js';
import type { RequestContext } from './context.js';

export const FORWARDED_HEADER = 'x-snapyard-forwarded';
const PASS_REQUEST = ['authorization', 'content-type', 'content-length', 'content-range', 'user-agent', 'accept'];
const PASS_RESPONSE = ['location', 'range', 'docker-upload-uuid', 'docker-content-digest', 'content-type', 'retry-after', 'www-authenticate'];
/** Answers relayed are status lines and OCI error bodies: small. */
const MAX_ANSWER = 64 * 1024;

export interface ForwarderOptions {
  /** Extra CA certificate (PEM file) for https replicas, beside the system roots (default: SNAPYARD_CA_CERT). */
  caFile?: string;
  /** How long a relayed request may wait for the holder's answer (default 10 min: a PATCH is answered once its body is stored). */
  answerTimeoutMs?: number;
}

export class Forwarder {
  private agent: Agent | null = null;

  constructor(private readonly opts: ForwarderOptions = {}) {}

  private dispatcher(): Agent {
    if (!this.agent) {
      const caFile = this.opts.caFile ?? process.env.SNAPYARD_CA_CERT;
      this.agent = new Agent({
        connect: { timeout: 5_000, ...(caFile ? { ca: [...rootCertificates, readFileSync(caFile, 'utf8')] } : {}) },
        headersTimeout: this.opts.answerTimeoutMs ?? 600_000,
        bodyTimeout: 60_000,
      });
    }
    return this.agent;
  }

  /** True when the request was already forwarded by a replica (it is answered here, whatever holds the session). */
  static wasForwarded(ctx: RequestContext): boolean {
    return ctx.headers.get(FORWARDED_HEADER) !== null;
  }

  /** Sends the request to the replica at `base` and answers what it answers. */
  async forward(ctx: RequestContext, base: string): Promise<Response> {
    const target = new URL(ctx.url.pathname + ctx.url.search, base);
    const headers: Record<string, string> = { [FORWARDED_HEADER]: '1' };
    for (const h of PASS_REQUEST) {
      const v = ctx.headers.get(h);
      if (v !== null) headers[h] = v;
    }
    const hasBody = ctx.method === 'PATCH' || ctx.method === 'PUT';
    if (!hasBody) await drain(ctx.incoming);
    let res;
    try {
      res = await request(target, {
        method: ctx.method as 'PATCH' | 'PUT' | 'GET' | 'DELETE',
        headers,
        ...(hasBody ? { body: ctx.incoming } : {}),
        dispatcher: this.dispatcher(),
      });
    } catch (e) {
      throw new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `the replica holding this upload (${base}) does not answer (${(e as Error).message}): start the upload again`);
    }
    const parts: Buffer[] = [];
    let n = 0;
    for await (const p of res.body) {
      n += (p as Buffer).byteLength;
      if (n > MAX_ANSWER) {
        res.body.destroy();
        throw new OciError(502, 'UNAVAILABLE', `the replica holding this upload (${base}) answered more than ${MAX_ANSWER} bytes`);
      }
      parts.push(p as Buffer);
    }
    const out: Record<string, string> = {};
    for (const h of PASS_RESPONSE) {
      const v = res.headers[h];
      if (typeof v === 'string') out[h] = v;
    }
    const body = Buffer.concat(parts);
    return new Response(res.statusCode === 204 || res.statusCode === 304 ? null : body, { status: res.statusCode, headers: out });
  }

  async close(): Promise<void> {
    const a = this.agent;
    this.agent = null;
    await a?.close();
  }
}

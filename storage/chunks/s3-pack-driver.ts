import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Agent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
import {
  DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client,
} from '@aws-sdk/client-s3';
import { SnapyardError } from '../errors.js';
import {
  checkPackName, checkRange, emptyStats, packExists, packMissing, rangePastEnd, Semaphore, PACK_SUFFIX,
  type PackDriver, type PackDriverStats, type PackFacts,
} from './pack-driver.js';

/** Where an S3 store is: `s3://BUCKET[/PREFIX]?endpoint=URL&region=R`. */
export interface S3Location {
  bucket: string;
  /** Key prefix of the packs: "" or ends with "/". */
  prefix: string;
  /** e.g. http://127.0.0.1:7480; absent: AWS's endpoint for the region. */
  endpoint?: string;
  region: string;
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** Parses `s3://BUCKET[/PREFIX]?endpoint=URL&region=R` (region defaults to AWS_REGION, then us-east-1). */
export function parseS3Url(url: string): S3Location {
  const bad = (why: string) => new SnapyardError('INVALID_ARGUMENT', `bad S3 store URL ${JSON.stringify(url)}: ${why} (expected s3://BUCKET[/PREFIX]?endpoint=URL&region=R)`);
  const m = /^s3:\/\/([^/?#]+)(\/[^?#]*)?(?:\?([^#]*))?$/.exec(url);
  if (!m) throw bad('not an s3:// URL');
  const bucket = m[1]!;
  if (!BUCKET.test(bucket)) throw bad(`bucket name ${JSON.stringify(bucket)} (3-63 characters: a-z 0-9 . -)`);
  const path = (m[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (path.split('/').some((s) => s === '..' || s === '.') || path.includes('//')) throw bad(`prefix ${JSON.stringify(path)}`);
  const loc: S3Location = { bucket, prefix: path === '' ? '' : `${path}/`, region: process.env.AWS_REGION || 'us-east-1' };
  for (const [k, v] of new URLSearchParams(m[3] ?? '')) {
    if (k === 'region') {
      if (!/^[a-z0-9-]+$/.test(v)) throw bad(`region ${JSON.stringify(v)}`);
      loc.region = v;
    } else if (k === 'endpoint') {
      let e: URL;
      try {
        e = new URL(v);
      } catch {
        throw bad(`endpoint ${JSON.stringify(v)}`);
      }
      if (e.protocol !== 'http:' && e.protocol !== 'https:') throw bad(`endpoint ${JSON.stringify(v)} is not http(s)`);
      loc.endpoint = v.replace(/\/+$/, '');
    } else {
      throw bad(`unknown parameter ${JSON.stringify(k)}`);
    }
  }
  return loc;
}

export interface S3PackDriverOptions {
  /** An s3:// URL (parseS3Url) or its parts. */
  location: string | S3Location;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, profile files, ...). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Requests in flight at most (a body being read counts). Default 16. */
  concurrency?: number;
  /** One attempt of one request, body included, may take this long. Default 120 s (a 256 MiB pack at ~2 MB/s). */
  timeoutMs?: number;
  /** Attempts after the first one for network errors, timeouts, 5xx, 429 and a bad digest. Default 4. */
  retries?: number;
  /** First pause before a retry; doubles each time (with jitter), at most 5 s. Default 100 ms. */
  backoffMs?: number;
  /** Keys per DeleteObjects request (S3 allows 1000). */
  deleteBatch?: number;
  /** Keys per ListObjectsV2 page (S3 returns at most 1000). */
  listPageSize?: number;
}

type Attempt<T> = (signal: AbortSignal) => Promise<T>;

interface SdkError {
  name?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(e: unknown): number | undefined {
  return (e as SdkError | null)?.$metadata?.httpStatusCode;
}

function errorName(e: unknown): string {
  const x = e as SdkError | null;
  return x?.name ?? x?.Code ?? 'Error';
}

/** Network errors, timeouts (no HTTP status), 5xx, 408, 429, 409 (a concurrent conditional write) and BadDigest. */
function retryable(e: unknown): boolean {
  if (e instanceof SnapyardError) return false;
  const s = statusOf(e);
  if (errorName(e) === 'BadDigest') return true;
  return s === undefined || s >= 500 || s === 408 || s === 409 || s === 429;
}

async function md5OfFile(file: string): Promise<{ md5: Buffer; size: number }> {
  const h = createHash('md5');
  let size = 0;
  for await (const piece of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    h.update(piece as Buffer);
    size += (piece as Buffer).length;
  }
  return { md5: h.digest(), size };
}

async function readBody(body: Readable, signal: AbortSignal): Promise<Buffer> {
  const onAbort = () => body.destroy(new Error('request timed out while reading the body'));
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    const parts: Buffer[] = [];
    for await (const piece of body) parts.push(piece as Buffer);
    return Buffer.concat(parts);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

/**
 * Packs as objects `<prefix><name>.pack` in one bucket. Puts are single
 * PutObject requests with Content-MD5 (the store rejects a corrupted body) and
 * If-None-Match: * (an existing pack is a CONFLICT, never replaced); gets are
 * ranged GETs. Every request runs under a concurrency limit with a timeout,
 * and is retried with backoff on network errors, timeouts and 5xx; after the
 * last attempt it fails with STORE_UNAVAILABLE. SDK retries are off: the
 * counts in stats() are the HTTP requests really made.
 */
export class S3PackDriver implements PackDriver {
  readonly location: string;
  private readonly loc: S3Location;
  private readonly s3: S3Client;
  private readonly sem: Semaphore;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly deleteBatch: number;
  private readonly listPageSize: number;
  private readonly counts: PackDriverStats = emptyStats();

  constructor(opts: S3PackDriverOptions) {
    this.loc = typeof opts.location === 'string' ? parseS3Url(opts.location) : opts.location;
    this.location = `s3://${this.loc.bucket}${this.loc.prefix === '' ? '' : `/${this.loc.prefix.slice(0, -1)}`}`;
    const concurrency = opts.concurrency ?? 16;
    this.sem = new Semaphore(concurrency);
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.retries = opts.retries ?? 4;
    this.backoffMs = opts.backoffMs ?? 100;
    this.deleteBatch = Math.min(1000, Math.max(1, opts.deleteBatch ?? 1000));
    this.listPageSize = Math.min(1000, Math.max(1, opts.listPageSize ?? 1000));
    const agentOptions = { keepAlive: true, maxSockets: concurrency };
    this.s3 = new S3Client({
      region: this.loc.region,
      ...(this.loc.endpoint ? { endpoint: this.loc.endpoint } : {}),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      forcePathStyle: true,
      // RGW 16 has no aws-chunked trailers (stream bodies fail with 411) and does not verify x-amz-checksum-*: Content-MD5 it is.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
      // Failures come back as typed errors; the SDK would also warn on the console for each failed stream put (a CONFLICT too).
      logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      requestHandler: {
        connectionTimeout: this.timeoutMs,
        requestTimeout: this.timeoutMs,
        throwOnRequestTimeout: true,
        httpAgent: new Agent(agentOptions),
        httpsAgent: new HttpsAgent(agentOptions),
      },
    });
  }

  private keyOf(name: string): string {
    return this.loc.prefix + name + PACK_SUFFIX;
  }

  /** One request with the concurrency limit, a timeout per attempt, and bounded retries with backoff. */
  private async request<T>(what: string, count: () => void, attempt: Attempt<T>): Promise<T> {
    for (let i = 0; ; i++) {
      try {
        return await this.sem.run(async () => {
          count();
          const signal = AbortSignal.timeout(this.timeoutMs);
          return await attempt(signal);
        });
      } catch (e) {
        if (!retryable(e) || i >= this.retries) throw this.typed(what, e, i + 1);
      }
      const pause = Math.min(5000, this.backoffMs * 2 ** i);
      await new Promise((r) => setTimeout(r, pause / 2 + Math.random() * (pause / 2)));
    }
  }

  private typed(what: string, e: unknown, attempts: number): SnapyardError {
    if (e instanceof SnapyardError) return e;
    const s = statusOf(e);
    const name = errorName(e);
    const why = `${name}${s === undefined ? '' : ` (HTTP ${s})`}: ${(e as Error)?.message ?? String(e)}`;
    if (name === 'BadDigest') return new SnapyardError('DIGEST_MISMATCH', `${what}: the store received other bytes than were sent, ${attempts} times: ${why}`, { cause: e });
    return new SnapyardError('STORE_UNAVAILABLE', `${what} on ${this.location} failed after ${attempts} attempt(s): ${why}`, {
      cause: e,
      detail: { status: s, name, attempts },
    });
  }

  async put(name: string, file: string, known?: PackFacts): Promise<void> {
    checkPackName(name);
    // The MD5 of the bytes meant to be there: S3 refuses a body that differs (BadDigest).
    const { md5, size } = known ?? (await md5OfFile(file));
    if (size > 5 * 1024 ** 3) throw new SnapyardError('SIZE_INVALID', `pack ${name} is ${size} bytes: a single S3 PutObject takes at most 5 GiB`);
    const key = this.keyOf(name);
    let attempts = 0;
    try {
      await this.request(`put ${name}`, () => { this.counts.puts++; this.counts.bytesPut += size; }, async (signal) => {
        attempts++;
        try {
          await this.s3.send(new PutObjectCommand({
            Bucket: this.loc.bucket, Key: key, Body: createReadStream(file, { highWaterMark: 1024 * 1024 }), ContentLength: size,
            ContentMD5: md5.toString('base64'), IfNoneMatch: '*',
          }), { abortSignal: signal });
        } catch (e) {
          if (statusOf(e) === 412) throw packExists(name, this.location);
          throw e;
        }
      });
    } catch (e) {
      // An earlier attempt may have stored it and lost only the answer: then the object is ours.
      if (e instanceof SnapyardError && e.code === 'CONFLICT' && attempts > 1 && (await this.etagOf(name)) === `"${md5.toString('hex')}"`) return;
      throw e;
    }
  }

  private async head(name: string): Promise<{ size: number; etag: string | undefined }> {
    return this.request(`head ${name}`, () => this.counts.gets++, async (signal) => {
      try {
        const r = await this.s3.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key: this.keyOf(name) }), { abortSignal: signal });
        return { size: r.ContentLength ?? 0, etag: r.ETag };
      } catch (e) {
        if (statusOf(e) === 404) throw packMissing(name, this.location, e);
        throw e;
      }
    });
  }

  private async etagOf(name: string): Promise<string | undefined> {
    return (await this.head(name)).etag;
  }

  async get(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(name, offset, length);
    if (length === 0) {
      // HTTP has no empty range: check that the pack exists and the offset is inside it.
      const { size } = await this.head(name);
      if (offset > size) throw rangePastEnd(name, offset, length, size);
      return Buffer.alloc(0);
    }
    return this.request(`get ${name}`, () => this.counts.gets++, async (signal) => {
      let r;
      try {
        r = await this.s3.send(new GetObjectCommand({
          Bucket: this.loc.bucket, Key: this.keyOf(name), Range: `bytes=${offset}-${offset + length - 1}`,
        }), { abortSignal: signal });
      } catch (e) {
        const s = statusOf(e);
        if (s === 404 && errorName(e) !== 'NoSuchBucket') throw packMissing(name, this.location, e);
        if (s === 416) throw rangePastEnd(name, offset, length);
        throw e;
      }
      let body = await readBody(r.Body as Readable, signal);
      this.counts.bytesGot += body.length;
      const total = Number(/\/(\d+)$/.exec(r.ContentRange ?? '')?.[1] ?? Number.NaN);
      if (r.ContentRange === undefined && body.length >= offset + length) body = body.subarray(offset, offset + length); // range ignored: whole object
      if (body.length !== length) {
        if (!Number.isNaN(total) && offset + length > total) throw rangePastEnd(name, offset, length, total);
        throw new Error(`short body: ${body.length} of ${length} bytes`); // retried
      }
      return body;
    });
  }

  async delete(names: string[]): Promise<void> {
    for (const name of names) checkPackName(name);
    const batches: string[][] = [];
    for (let i = 0; i < names.length; i += this.deleteBatch) batches.push(names.slice(i, i + this.deleteBatch));
    await Promise.all(batches.map((batch) => this.request(`delete of ${batch.length} packs`, () => this.counts.deletes++, async (signal) => {
      const r = await this.s3.send(new DeleteObjectsCommand({
        Bucket: this.loc.bucket,
        Delete: { Objects: batch.map((n) => ({ Key: this.keyOf(n) })), Quiet: true },
      }), { abortSignal: signal });
      const failed = (r.Errors ?? []).filter((x) => x.Code !== 'NoSuchKey');
      if (failed.length > 0) {
        throw new SnapyardError('STORE_UNAVAILABLE', `delete of ${failed.length} of ${batch.length} packs failed on ${this.location}: ${failed[0]!.Key} ${failed[0]!.Code} ${failed[0]!.Message ?? ''}`, {
          detail: { failed: failed.map((x) => ({ key: x.Key, code: x.Code })) },
        });
      }
    })));
  }

  async *list(): AsyncIterable<{ name: string; size: number }> {
    let token: string | undefined;
    do {
      const page = await this.request('list', () => this.counts.lists++, (signal) => this.s3.send(new ListObjectsV2Command({
        Bucket: this.loc.bucket, Prefix: this.loc.prefix, MaxKeys: this.listPageSize,
        ...(token ? { ContinuationToken: token } : {}),
      }), { abortSignal: signal }));
      for (const o of page.Contents ?? []) {
        const rest = (o.Key ?? '').slice(this.loc.prefix.length);
        if (rest.includes('/') || !rest.endsWith(PACK_SUFFIX)) continue;
        yield { name: rest.slice(0, -PACK_SUFFIX.length), size: o.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  stats(): PackDriverStats {
    return { ...this.counts };
  }

  async close(): Promise<void> {
    this.s3.destroy();
  }
}

/**
 * An HTTP proxy in front of an S3 endpoint (Ceph RGW) that counts the
 * requests the endpoint receives, by kind, and the payload bytes each way:
 * give `snapyard serve --store 's3://BUCKET/PREFIX?endpoint=' + proxy.endpoint`.
 * Requests are forwarded unchanged (bench/http-proxy.ts). Payload bytes are
 * counted when a request ends.
 *
 * Runs in the calling process: drive clients with async spawn, not execFileSync.
 */
import { startHttpProxy } from './http-proxy.js';

/** PUT (PutObject), GET (GetObject, ranged or not), HEAD, LIST (ListObjectsV2), DELETE (DeleteObjects or DeleteObject), OTHER. */
export type S3RequestKind = 'PUT' | 'GET' | 'HEAD' | 'LIST' | 'DELETE' | 'OTHER';

export interface S3Counts {
  requests: Record<S3RequestKind, number>;
  /** Request bodies (PUT payloads), client -> S3. */
  bytesUp: number;
  /** Response bodies (GET payloads), S3 -> client. */
  bytesDown: number;
}

export interface S3CountingProxy {
  /** http://127.0.0.1:PORT, the endpoint to give the store. */
  endpoint: string;
  reset(): void;
  counts(): S3Counts;
  close(): Promise<void>;
}

function kindOf(method: string, url: string): S3RequestKind {
  const q = new URLSearchParams(url.split('?')[1] ?? '');
  if (method === 'GET') return q.has('list-type') ? 'LIST' : 'GET';
  if (method === 'PUT' || method === 'HEAD') return method;
  if (method === 'DELETE' || (method === 'POST' && q.has('delete'))) return 'DELETE';
  return 'OTHER';
}

const zero = (): S3Counts => ({ requests: { PUT: 0, GET: 0, HEAD: 0, LIST: 0, DELETE: 0, OTHER: 0 }, bytesUp: 0, bytesDown: 0 });

export async function startS3CountingProxy(endpoint: string): Promise<S3CountingProxy> {
  let c = zero();
  const proxy = await startHttpProxy(endpoint, (method, url) => {
    c.requests[kindOf(method, url)]++;
    const counts = c;
    return (x) => {
      counts.bytesUp += x.bytesUp;
      counts.bytesDown += x.bytesDown;
    };
  });
  return {
    endpoint: proxy.endpoint,
    reset: () => { c = zero(); },
    counts: () => ({ ...c, requests: { ...c.requests } }),
    close: proxy.close,
  };
}

/**
 * An HTTP proxy in front of an S3 endpoint (Ceph RGW) that counts the
 * requests the endpoint receives, by kind, and the payload bytes each way:
 * give `snapyard serve --store 's3://BUCKET/PREFIX?endpoint=' + proxy.endpoint`.
 * Requests are forwarded unchanged (path-style URLs, Host header included, so
 * SigV4 signatures still match).
 *
 * Runs in the calling process: drive clients with async spawn, not execFileSync.
 */
import { Agent, createServer, request } from 'node:http';

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
  const target = new URL(endpoint);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  let c = zero();
  const server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    c.requests[kindOf(method, req.url ?? '/')]++;
    const up = request({ host: target.hostname, port: target.port, method, path: req.url, headers: req.headers, agent }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.statusMessage, answer.headers);
      answer.on('data', (d: Buffer) => { c.bytesDown += d.length; });
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    req.on('data', (d: Buffer) => { c.bytesUp += d.length; });
    req.pipe(up);
    up.on('error', () => res.destroy());
    req.on('error', () => up.destroy());
  });
  // Longer than the SDK's idle keep-alive, so it never reuses a socket the proxy just closed.
  server.keepAliveTimeout = 120_000;
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    reset: () => { c = zero(); },
    counts: () => ({ ...c, requests: { ...c.requests } }),
    close: () => new Promise<void>((res) => {
      server.closeAllConnections();
      agent.destroy();
      server.close(() => res());
    }),
  };
}

/**
 * A pass-through HTTP/1.1 proxy on a loopback port for the benches: each
 * request is forwarded unchanged (method, path, headers: SigV4 signatures
 * still match) to the target over keep-alive connections, and `watch` sees it
 * begin and end (with its body bytes each way and its status).
 *
 * Runs in the calling process: drive clients with async spawn, not execFileSync.
 */
import { Agent, createServer, request } from 'node:http';

export interface HttpExchange {
  method: string;
  /** Path and query as the client sent them. */
  url: string;
  status: number;
  /** Request body bytes (client -> target). */
  bytesUp: number;
  /** Response body bytes (target -> client). */
  bytesDown: number;
}

export interface HttpProxy {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

/** `watch(method, url)` is called when a request arrives; the function it answers (if any) when its response has ended or failed. */
export async function startHttpProxy(target: string, watch: (method: string, url: string) => ((x: HttpExchange) => void) | void): Promise<HttpProxy> {
  const to = new URL(target);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const server = createServer((req, res) => {
    const x: HttpExchange = { method: req.method ?? 'GET', url: req.url ?? '/', status: 0, bytesUp: 0, bytesDown: 0 };
    const done = watch(x.method, x.url);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      done?.(x);
    };
    const up = request({ host: to.hostname, port: to.port, method: x.method, path: x.url, headers: req.headers, agent }, (answer) => {
      x.status = answer.statusCode ?? 502;
      res.writeHead(x.status, answer.statusMessage, answer.headers);
      answer.on('data', (d: Buffer) => { x.bytesDown += d.length; });
      answer.pipe(res);
      answer.on('error', () => res.destroy());
    });
    req.on('data', (d: Buffer) => { x.bytesUp += d.length; });
    req.pipe(up);
    up.on('error', () => res.destroy());
    req.on('error', () => up.destroy());
    res.on('finish', end).on('close', end);
  });
  // Longer than the clients' idle keep-alive, so none reuses a socket the proxy just closed.
  server.keepAliveTimeout = 120_000;
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    close: () => new Promise<void>((res) => {
      server.closeAllConnections();
      agent.destroy();
      server.close(() => res());
    }),
  };
}

import { getRequestListener } from '@hono/node-server';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Logger } from 'pino';
import { createApp } from './app.js';
import { defaultUiDir, UiAssets } from './ui/ui-assets.js';
import type { Store } from '../storage/open-store.js';
import type { Authenticator } from './auth/authenticator.js';
import type { RouteLimits } from './routes/table.js';
import { Metrics } from './metrics.js';
import type { ReadinessOptions } from './health.js';
import { SnapyardError } from '../storage/errors.js';

export interface TlsFiles {
  cert: string;
  key: string;
}

export interface ConnectionLimits {
  /** A request's headers must arrive within this (slow clients are dropped). */
  headersTimeoutMs: number;
  /** A connection with no traffic either way for this long is closed (a stalled body included). */
  idleTimeoutMs: number;
  keepAliveTimeoutMs: number;
  /** Connections beyond this are refused at accept. */
  maxConnections: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 60_000,
  keepAliveTimeoutMs: 65_000,
  maxConnections: 8192,
};

export interface ServerOptions {
  store: Store;
  host: string;
  port: number;
  logger?: Logger;
  auth?: Authenticator;
  tls?: TlsFiles;
  limits?: Partial<RouteLimits>;
  connections?: Partial<ConnectionLimits>;
  /** false: no metrics are counted and /metrics is not served. */
  metricsEnabled?: boolean;
  /** host:port for a listener of its own serving GET /metrics (then not on the main port). */
  metricsAddr?: string;
  readiness?: ReadinessOptions;
  /** On close, connections still busy after this are cut (default 6 s, inside podman's 10 s and Kubernetes' 30 s). */
  shutdownGraceMs?: number;
  /** false: no web page at /ui/ (serve --no-ui); default: the page built into dist/ui, when it was built. */
  ui?: boolean;
}

export interface RunningServer {
  url: string;
  port: number;
  /** The metrics listener's URL, when it has its own (metricsAddr). */
  metricsUrl?: string;
  metrics: Metrics;
  /** Re-reads the TLS certificate and key (SIGHUP); a bad pair keeps the old one and throws. */
  reloadTls(): void;
  /** Stops accepting, lets requests in flight finish, then returns. */
  close(): Promise<void>;
}

function readTls(t: TlsFiles): { cert: Buffer; key: Buffer } {
  return { cert: readFileSync(t.cert), key: readFileSync(t.key) };
}

const VALID_HOST = /^[A-Za-z0-9._~\-]*(\[[0-9A-Fa-f:.]+\])?(:\d{1,5})?$/;

/**
 * Request targets the HTTP adapter cannot turn into a URL (a backslash in the
 * path, a path not starting with /, a malformed Host) get a 400 in the OCI
 * error format here, instead of the adapter's bare 400.
 */
function guardRequestTarget(listener: (req: IncomingMessage, res: ServerResponse) => unknown): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const target = req.url ?? '';
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    const host = req.headers.host ?? '';
    const bad = !path.startsWith('/') && !/^https?:\/\//i.test(path) ? 'the request target must be a path or an absolute URL' : path.includes('\\') ? 'a backslash in the request path' : !VALID_HOST.test(host) ? 'an invalid Host header' : null;
    if (bad === null) {
      void listener(req, res);
      return;
    }
    const body = JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message: `bad request: ${bad}` }] });
    res.writeHead(400, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'Docker-Distribution-API-Version': 'registry/2.0', Connection: 'close' });
    res.end(body);
    req.resume();
  };
}

/** A listener of its own for GET /metrics (--metrics-addr host:port), as operators often keep it off the public port. */
async function listenMetrics(hostPort: string, metrics: Metrics): Promise<{ server: Server; url: string }> {
  const m = /^(.*):(\d+)$/.exec(hostPort);
  if (!m) throw new SnapyardError('INVALID_ARGUMENT', `--metrics-addr ${JSON.stringify(hostPort)} must be host:port`);
  const host = m[1]!.replace(/^\[(.*)\]$/, '$1') || '0.0.0.0';
  const server = createHttpServer((req, res) => {
    if ((req.method === 'GET' || req.method === 'HEAD') && (req.url === '/metrics' || req.url?.startsWith('/metrics?'))) {
      void metrics.text().then((t) => {
        res.writeHead(200, { 'Content-Type': t.contentType, 'Cache-Control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : t.body);
      });
      return;
    }
    res.writeHead(req.url === '/healthz' ? 200 : 404, { 'Content-Type': 'text/plain' }).end(req.url === '/healthz' ? 'ok\n' : 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(m[2]), host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return { server, url: `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address === '0.0.0.0' ? '127.0.0.1' : a.address}:${a.port}` };
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const metrics = new Metrics(opts.store, { enabled: opts.metricsEnabled !== false });
  const ui = opts.ui === false ? null : UiAssets.load(defaultUiDir());
  if (opts.ui !== false && ui === null) opts.logger?.warn('the web page is not built (no dist/ui: npm run build): /ui/ is not served');
  const app = createApp({
    store: opts.store,
    metrics,
    metricsRoute: opts.metricsAddr === undefined && opts.metricsEnabled !== false,
    ...(opts.readiness ? { readiness: opts.readiness } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
    ui,
    about: { store: String(opts.store.chunks), metadata: opts.store.meta.location },
  });
  const lim = { ...DEFAULT_CONNECTION_LIMITS, ...opts.connections };
  // Header deadlines are checked this often (node's default, 30 s, would let slow clients linger).
  const serverOptions = { connectionsCheckingInterval: Math.min(5_000, lim.headersTimeoutMs), headersTimeout: lim.headersTimeoutMs, requestTimeout: 0 };
  // Responses in flight, so a shutdown can close their connections as soon as each is answered.
  const active = new Set<ServerResponse>();
  let closing = false;
  const inner = guardRequestTarget(getRequestListener(app.fetch));
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    active.add(res);
    res.once('close', () => active.delete(res));
    if (closing) res.shouldKeepAlive = false;
    inner(req, res);
  };
  const server = (opts.tls ? createHttpsServer({ ...serverOptions, ...readTls(opts.tls) }, listener) : createHttpServer(serverOptions, listener)) as Server;
  server.requestTimeout = 0; // large blobs stream for as long as they need
  server.headersTimeout = lim.headersTimeoutMs;
  server.keepAliveTimeout = lim.keepAliveTimeoutMs;
  server.timeout = lim.idleTimeoutMs; // idle sockets (no bytes either way) are destroyed
  server.maxConnections = lim.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const metricsServer = opts.metricsAddr !== undefined && opts.metricsEnabled !== false ? await listenMetrics(opts.metricsAddr, metrics) : null;
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const connectHost = host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host;
  const grace = opts.shutdownGraceMs ?? 6000;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${connectHost}:${addr.port}`,
    port: addr.port,
    metrics,
    ...(metricsServer ? { metricsUrl: metricsServer.url } : {}),
    reloadTls() {
      if (!opts.tls) return;
      (server as unknown as HttpsServer).setSecureContext(readTls(opts.tls));
    },
    close: async () => {
      closing = true;
      // In-flight requests finish. Connections whose response had not started yet are closed after it;
      // a streamed response that had already started keeps its connection until the client closes it or
      // the grace deadline cuts it (ending such sockets early truncated responses under load).
      for (const res of active) res.shouldKeepAlive = false;
      const cut = setTimeout(() => server.closeAllConnections(), grace);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
      clearTimeout(cut);
      if (metricsServer) await new Promise<void>((resolve) => metricsServer.server.close(() => resolve()));
    },
  };
}

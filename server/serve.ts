import { createAdaptorServer } from '@hono/node-server';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Logger } from 'pino';
import { createApp } from './app.js';
import type { Store } from '../storage/open-store.js';
import type { Authenticator } from './auth/authenticator.js';
import type { RouteLimits } from './routes/table.js';

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
}

export interface RunningServer {
  url: string;
  port: number;
  /** Re-reads the TLS certificate and key (SIGHUP); a bad pair keeps the old one and throws. */
  reloadTls(): void;
  /** Stops accepting, lets requests in flight finish, then returns. */
  close(): Promise<void>;
}

function readTls(t: TlsFiles): { cert: Buffer; key: Buffer } {
  return { cert: readFileSync(t.cert), key: readFileSync(t.key) };
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const app = createApp({
    store: opts.store,
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
  });
  const lim = { ...DEFAULT_CONNECTION_LIMITS, ...opts.connections };
  // Header deadlines are checked this often (node's default, 30 s, would let slow clients linger).
  const serverOptions = { connectionsCheckingInterval: Math.min(5_000, lim.headersTimeoutMs), headersTimeout: lim.headersTimeoutMs, requestTimeout: 0 };
  const server = (
    opts.tls
      ? createAdaptorServer({ fetch: app.fetch, createServer: createHttpsServer, serverOptions: { ...serverOptions, ...readTls(opts.tls) } })
      : createAdaptorServer({ fetch: app.fetch, serverOptions })
  ) as Server;
  server.requestTimeout = 0; // large blobs stream for as long as they need
  server.headersTimeout = lim.headersTimeoutMs;
  server.keepAliveTimeout = lim.keepAliveTimeoutMs;
  server.timeout = lim.idleTimeoutMs; // idle sockets (no bytes either way) are destroyed
  server.maxConnections = lim.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const connectHost = host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${connectHost}:${addr.port}`,
    port: addr.port,
    reloadTls() {
      if (!opts.tls) return;
      (server as unknown as HttpsServer).setSecureContext(readTls(opts.tls));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      }),
  };
}

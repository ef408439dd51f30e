import { resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { openStore } from '../storage/open-store.js';
import { MaintainedRemoteChunkStore } from '../storage/chunks/remote-chunk-maintenance.js';
import { SnapyardError } from '../storage/errors.js';
import type { ReadCheck } from '../storage/chunks/chunk-codec.js';
import { startServer } from '../server/serve.js';
import { Authenticator } from '../server/auth/authenticator.js';
import { AccessPolicy } from '../server/auth/access.js';
import { Htpasswd } from '../server/auth/htpasswd.js';
import { TokenIssuer } from '../server/auth/tokens.js';

export interface ServeOptions {
  data: string;
  /** postgres:// URL of the metadata store (default: SQLite in the data directory). */
  metadata?: string;
  /** s3:// URL of the chunk packs (default: the data directory); needs `metadata`. */
  store?: string;
  /** Where the other replicas reach this one (relayed upload-session requests). */
  advertiseUrl?: string;
  host: string;
  port: number;
  workers?: number;
  level?: number;
  /** How chunks read back from the store are checked (storage/chunks/chunk-codec.ts). */
  verifyReads?: ReadCheck;
  /** Idle upload / push sessions expire after this (default 1 h). */
  uploadTtlMs?: number;
  htpasswd?: string;
  access?: string;
  anonymousPull?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  /** A file whose bytes sign tokens (replicas share it); default: a random key per process. */
  tokenSecret?: string;
  tokenTtlSeconds?: number;
  authRealm?: string;
  authService?: string;
  headerTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxConnections?: number;
  maxBlobBytes?: number;
  /** The caches' memory budget (default 128 MiB). */
  cacheMemoryBytes?: number;
  maxSessionsPerUser?: number;
  maxSessionsTotal?: number;
  /** host:port of a listener of its own for GET /metrics. */
  metricsAddr?: string;
  metricsEnabled?: boolean;
  shutdownGraceMs?: number;
  /** /readyz is 503 below this much free space. */
  minFreeBytes?: number;
  /** false: no web page at /ui/ (--no-ui). */
  ui?: boolean;
}

const LOOPBACK = /^(127\.|::1$|\[::1\]$|localhost$)/;

function buildAuth(o: ServeOptions): Authenticator {
  if (o.access && !o.htpasswd) throw new SnapyardError('INVALID_ARGUMENT', '--access needs --htpasswd (without it the registry is open)');
  if (o.anonymousPull && !o.htpasswd) throw new SnapyardError('INVALID_ARGUMENT', '--anonymous-pull needs --htpasswd (without it everyone may do everything)');
  const policyOf = () => (o.access ? AccessPolicy.fromFile(o.access, { anonymousPull: o.anonymousPull === true }) : new AccessPolicy({ anonymousPull: o.anonymousPull === true }));
  const service = o.authService ?? 'snapyard';
  const secret = o.tokenSecret ? readFileSync(o.tokenSecret) : process.env.SNAPYARD_TOKEN_SECRET ? Buffer.from(process.env.SNAPYARD_TOKEN_SECRET) : undefined;
  return new Authenticator({
    htpasswd: o.htpasswd ? new Htpasswd(o.htpasswd) : null,
    policy: policyOf(),
    tokens: new TokenIssuer(service, secret, o.tokenTtlSeconds ?? 300),
    service,
    ...(o.authRealm ? { realm: o.authRealm } : {}),
  });
}

/** `snapyard serve`: the registry on the embedded default store, until SIGTERM/SIGINT. */
export async function serve(opts: ServeOptions): Promise<void> {
  // Log lines are written asynchronously (flushed at exit): a synchronous write per request
  // took 5% of the event loop under bench/load.ts, more when stdout is a slow pipe.
  const logger = pino({ base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 1, sync: false }));
  if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new SnapyardError('INVALID_ARGUMENT', '--tls-cert and --tls-key go together');
  const auth = buildAuth(opts);
  const dataDir = resolve(opts.data);
  const store = await openStore({
    dataDir,
    ...(opts.metadata !== undefined ? { metadata: opts.metadata } : {}),
    ...(opts.store !== undefined ? { store: opts.store } : {}),
    ...(opts.advertiseUrl !== undefined ? { advertiseUrl: opts.advertiseUrl } : {}),
    ...(opts.cacheMemoryBytes !== undefined ? { cacheMemoryBytes: opts.cacheMemoryBytes } : {}),
    ...(opts.workers !== undefined ? { workers: opts.workers } : {}),
    ...(opts.level !== undefined ? { level: opts.level } : {}),
    ...(opts.verifyReads !== undefined ? { readCheck: opts.verifyReads } : {}),
    ...(opts.uploadTtlMs !== undefined ? { uploadTtlMs: opts.uploadTtlMs } : {}),
    limits: {
      ...(opts.maxBlobBytes !== undefined ? { maxBlobBytes: opts.maxBlobBytes } : {}),
      ...(opts.maxSessionsPerUser !== undefined ? { maxSessionsPerUser: opts.maxSessionsPerUser } : {}),
      ...(opts.maxSessionsTotal !== undefined ? { maxSessionsTotal: opts.maxSessionsTotal } : {}),
    },
  });
  const server = await startServer({
    store, host: opts.host, port: opts.port, logger, auth,
    ...(opts.tlsCert && opts.tlsKey ? { tls: { cert: opts.tlsCert, key: opts.tlsKey } } : {}),
    ...(opts.maxBlobBytes !== undefined ? { limits: { maxBlobBytes: opts.maxBlobBytes, maxPushUploadBytes: opts.maxBlobBytes } } : {}),
    ...(opts.metricsAddr !== undefined ? { metricsAddr: opts.metricsAddr } : {}),
    ...(opts.metricsEnabled === false ? { metricsEnabled: false } : {}),
    ...(opts.ui === false ? { ui: false } : {}),
    ...(opts.shutdownGraceMs !== undefined ? { shutdownGraceMs: opts.shutdownGraceMs } : {}),
    ...(opts.minFreeBytes !== undefined ? { readiness: { minFreeBytes: opts.minFreeBytes } } : {}),
    connections: {
      ...(opts.headerTimeoutMs !== undefined ? { headersTimeoutMs: opts.headerTimeoutMs } : {}),
      ...(opts.idleTimeoutMs !== undefined ? { idleTimeoutMs: opts.idleTimeoutMs } : {}),
      ...(opts.maxConnections !== undefined ? { maxConnections: opts.maxConnections } : {}),
    },
  });
  logger.info({ data: dataDir, metadata: store.meta.location, chunks: String(store.chunks), host: opts.host, port: server.port, tls: opts.tlsCert !== undefined, auth: auth.enabled, ...(server.metricsUrl ? { metrics: `${server.metricsUrl}/metrics` } : {}) }, `snapyard serving on ${opts.tlsCert ? "https" : "http"}://${opts.host}:${server.port}`);
  if (!auth.enabled && !LOOPBACK.test(opts.host)) {
    const msg = `WARNING: no --htpasswd: anyone who can reach ${opts.host}:${server.port} may push, delete, move tags, run gc and verify --repair. Use --htpasswd (docs/auth.md) before exposing this port.`;
    logger.warn(msg);
    process.stderr.write(`\n*** ${msg} ***\n\n`);
  }
  process.on('SIGHUP', () => {
    try {
      server.reloadTls();
      auth.reloadUsers();
      if (opts.access) auth.setPolicy(AccessPolicy.fromFile(opts.access, { anonymousPull: opts.anonymousPull === true }));
      logger.info('SIGHUP: reloaded TLS certificate, users and access rules');
    } catch (e) {
      logger.error({ err: e }, 'SIGHUP: reload failed; keeping the previous certificate, users and rules');
    }
  });
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await server.close();
    await store.close();
    // Requests to the pack store since start (S3: PUT/GET/DELETE/LIST and payload bytes).
    const packRequests = store.chunks instanceof MaintainedRemoteChunkStore ? store.chunks.driver.stats() : undefined;
    logger.info(packRequests ? { packRequests } : {}, 'stopped');
    logger.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

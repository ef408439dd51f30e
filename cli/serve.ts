import { resolve } from 'node:path';
import pino from 'pino';
import { openStore } from '../storage/open-store.js';
import { startServer } from '../server/serve.js';

export interface ServeOptions {
  data: string;
  host: string;
  port: number;
  workers?: number;
  level?: number;
  /** Idle upload / push sessions expire after this (default 1 h). */
  uploadTtlMs?: number;
}

/** `snapyard serve`: the registry on the embedded default store, until SIGTERM/SIGINT. */
export async function serve(opts: ServeOptions): Promise<void> {
  const logger = pino({ base: undefined, timestamp: pino.stdTimeFunctions.isoTime });
  const dataDir = resolve(opts.data);
  const store = openStore({
    dataDir,
    ...(opts.workers !== undefined ? { workers: opts.workers } : {}),
    ...(opts.level !== undefined ? { level: opts.level } : {}),
    ...(opts.uploadTtlMs !== undefined ? { uploadTtlMs: opts.uploadTtlMs } : {}),
  });
  const server = await startServer({ store, host: opts.host, port: opts.port, logger });
  logger.info({ data: dataDir, host: opts.host, port: server.port }, `snapyard serving on ${opts.host}:${server.port}`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    await server.close();
    await store.close();
    logger.info('stopped');
    logger.flush();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

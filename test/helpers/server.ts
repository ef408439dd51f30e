import { afterAll, beforeAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../storage/open-store.js';
import type { LocalChunkStore } from '../../storage/chunks/local-chunk-store.js';
import type { Limits } from '../../storage/limits.js';
import { startServer, type ServerOptions } from '../../server/serve.js';
import { Oci } from './oci.js';

export interface TestServer {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  /** e.g. 127.0.0.1:40123 (for skopeo's docker:// references) */
  host: string;
  dataDir: string;
  /** The test server's store: the embedded one, so its chunk store is the local one. */
  store: Store & { chunks: LocalChunkStore };
  stop(): Promise<void>;
}

/** A real registry on a loopback port, with its own temporary data directory. */
export async function startTestServer(
  opts: { dataDir?: string; workers?: number; storeLimits?: Partial<Limits> } & Pick<ServerOptions, 'auth' | 'tls' | 'limits' | 'connections' | 'logger' | 'readiness' | 'metricsAddr'> = {},
): Promise<TestServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'snapyard-test-'));
  const store = await openStore({ dataDir, workers: opts.workers ?? 1, ...(opts.storeLimits ? { limits: opts.storeLimits } : {}) });
  const { dataDir: _d, workers: _w, storeLimits: _l, ...serverOpts } = opts;
  const server = await startServer({ store, host: '127.0.0.1', port: 0, ...serverOpts });
  return {
    url: server.url,
    host: server.url.replace(/^https?:\/\//, ''),
    dataDir,
    store: store as Store & { chunks: LocalChunkStore },
    async stop() {
      await server.close();
      await store.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Registers a registry for the test file: started before its tests, stopped
 * after; `use` receives the server and an OCI client for it.
 */
export function useRegistry(use: (r: { s: TestServer; oci: Oci }) => void): void {
  let s: TestServer | undefined;
  beforeAll(async () => {
    s = await startTestServer();
    use({ s, oci: new Oci(s.url) });
  });
  afterAll(async () => {
    await s?.stop();
  });
}

/**
 * Test registries: a real server on a loopback port over a real store.
 *
 * The backend of every test server comes from SNAPYARD_TEST_BACKEND:
 * - `local` (default): the embedded store, packs and SQLite under the data directory.
 * - `s3`: metadata and chunk catalog in a fresh schema of the run's PostgreSQL,
 *   chunk packs under a fresh prefix of the run's S3 (Ceph RGW) bucket
 *   (test/helpers/services.ts): `openStore({ metadata: 'postgres://...', store: 's3://...' })`.
 *   The prefix is emptied and the schema dropped when the server stops; a
 *   server started again on the same `dataDir` (a restart) opens the same
 *   prefix and schema, cleaned after the test file.
 *
 * scripts/test.sh runs the files listed in test/s3-suites.txt a second time
 * with SNAPYARD_TEST_BACKEND=s3. Assertions about the local store's own
 * layout (pack files, `store/index.db`, `meta.db`) use `localChunks` and
 * `testLocal`: they exist on the local backend only.
 */
import { afterAll, beforeAll, test } from 'vitest';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store, type StoreConfig } from '../../storage/open-store.js';
import { LocalChunkStore } from '../../storage/chunks/local-chunk-store.js';
import { RECORD_HEADER_SIZE } from '../../storage/chunks/pack-files.js';
import type { MaintainedRemoteChunkStore } from '../../storage/chunks/remote-chunk-maintenance.js';
import { rawOf, type Digest } from '../../storage/digest.js';
import type { Limits } from '../../storage/limits.js';
import { startServer, type ServerOptions } from '../../server/serve.js';
import { dropPostgresSchema, freshPostgresUrl } from './metadata-stores.js';
import { Oci } from './oci.js';
import { emptyS3Prefix } from './s3-prefix.js';
import { testS3 } from './services.js';

export type TestBackend = 'local' | 's3';

function backendFromEnv(): TestBackend {
  const v = process.env.SNAPYARD_TEST_BACKEND ?? 'local';
  if (v !== 'local' && v !== 's3') throw new Error(`SNAPYARD_TEST_BACKEND=${v}: expected local or s3`);
  return v;
}

/** The backend test servers of this run use (SNAPYARD_TEST_BACKEND). */
export const TEST_BACKEND: TestBackend = backendFromEnv();

/**
 * A test that needs the local store's own files (pack files, SQLite): defined
 * on the local backend only (not registered at all on s3, so it is neither
 * run nor counted there). `why` says what it needs.
 */
export function testLocal(name: string, why: string, fn: () => Promise<void>, timeout?: number): void {
  if (TEST_BACKEND === 'local') test(name, fn, timeout);
  else void why;
}

export interface TestServer {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  /** e.g. 127.0.0.1:40123 (for skopeo's docker:// references) */
  host: string;
  dataDir: string;
  backend: TestBackend;
  /** s3 backend: the PostgreSQL URL (its schema) and the s3:// store URL (its prefix) of the store; null on local. */
  remote: RemoteLocation | null;
  store: Store;
  /** The local chunk store (its packs on disk); throws on the s3 backend. */
  readonly localChunks: LocalChunkStore;
  stop(): Promise<void>;
}

export interface RemoteLocation {
  metadata: string;
  store: string;
}

/** Remote locations of servers started on a data directory the test gave (kept for a restart, cleaned after the file). */
const remoteOfDataDir = new Map<string, RemoteLocation>();
afterAll(async () => {
  const all = [...remoteOfDataDir.values()];
  remoteOfDataDir.clear();
  for (const r of all) await dropRemote(r);
});

async function newRemote(): Promise<RemoteLocation> {
  const s3 = await testS3();
  return { metadata: await freshPostgresUrl(), store: s3.withPrefix(`srv-${process.pid}-${randomBytes(4).toString('hex')}`) };
}

async function dropRemote(r: RemoteLocation): Promise<void> {
  await emptyS3Prefix(await testS3(), r.store);
  await dropPostgresSchema(r.metadata);
}

/** Where the store of a server on `dataDir` lives (`owned`: the data directory is the helper's, so nothing restarts on it). */
async function locationFor(dataDir: string, owned: boolean): Promise<Pick<StoreConfig, 'metadata' | 'store'>> {
  if (TEST_BACKEND === 'local') return {};
  if (owned) return newRemote();
  let r = remoteOfDataDir.get(dataDir);
  if (!r) remoteOfDataDir.set(dataDir, (r = await newRemote()));
  return r;
}

/**
 * The flags that put a spawned `snapyard serve` on this run's backend: none on
 * local; on s3, --metadata and --store of a fresh schema and bucket prefix
 * (cleaned after the test file; credentials from the environment).
 */
export async function serveBackendArgs(): Promise<string[]> {
  if (TEST_BACKEND === 'local') return [];
  const r = await newRemote();
  remoteOfDataDir.set(`serve:${r.store}`, r);
  return ['--metadata', r.metadata, '--store', r.store];
}

/**
 * Flips one bit of a committed chunk's record where the store keeps it (bit
 * rot): `pick(n)` chooses the byte among the record's n bytes (header
 * included). Local: in its pack file; s3: the pack object is read, deleted and
 * put again with the bit flipped.
 */
export async function flipChunkBit(s: TestServer, digest: Digest, pick: (recordBytes: number) => number): Promise<void> {
  await s.store.chunks.flush();
  const bit = (at: number) => 1 << (at % 8);
  if (s.backend === 'local') {
    const w = s.localChunks.where(digest);
    if (!w) throw new Error(`${digest} is not held`);
    const at = w.offset - RECORD_HEADER_SIZE + pick(RECORD_HEADER_SIZE + w.length);
    const fd = openSync(w.path, 'r+');
    try {
      const b = Buffer.alloc(1);
      readSync(fd, b, 0, 1, at);
      b[0] = b[0]! ^ bit(at);
      writeSync(fd, b, 0, 1, at);
    } finally {
      closeSync(fd);
    }
    return;
  }
  const chunks = s.store.chunks as MaintainedRemoteChunkStore;
  const [e] = await chunks.catalog.lookup([rawOf(digest)]);
  if (!e) throw new Error(`${digest} is not in the catalog`);
  let size = -1;
  for await (const p of chunks.driver.list()) if (p.name === e.pack) size = p.size;
  const pack = await chunks.driver.get(e.pack, 0, size);
  const at = e.offset + pick(RECORD_HEADER_SIZE + e.length);
  pack[at] = pack[at]! ^ bit(at);
  const file = join(s.dataDir, `flipped-${e.pack}`);
  writeFileSync(file, pack);
  await chunks.driver.delete([e.pack]);
  await chunks.driver.put(e.pack, file);
  rmSync(file);
}

/** A real registry on a loopback port, with its own temporary data directory. */
export async function startTestServer(
  opts: { dataDir?: string; workers?: number; storeLimits?: Partial<Limits>; uploadTtlMs?: number } & Pick<ServerOptions, 'auth' | 'tls' | 'limits' | 'connections' | 'logger' | 'readiness' | 'metricsAddr'> = {},
): Promise<TestServer> {
  const owned = !opts.dataDir;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'snapyard-test-'));
  const location = await locationFor(dataDir, owned);
  const { dataDir: _d, workers, storeLimits, uploadTtlMs, ...serverOpts } = opts;
  const store = await openStore({ dataDir, workers: workers ?? 1, ...location, ...(storeLimits ? { limits: storeLimits } : {}), ...(uploadTtlMs !== undefined ? { uploadTtlMs } : {}) });
  const server = await startServer({ store, host: '127.0.0.1', port: 0, ...serverOpts });
  return {
    url: server.url,
    host: server.url.replace(/^https?:\/\//, ''),
    dataDir,
    backend: TEST_BACKEND,
    remote: location.store ? (location as RemoteLocation) : null,
    store,
    get localChunks(): LocalChunkStore {
      if (!(store.chunks instanceof LocalChunkStore)) throw new Error(`the test server's chunk store is ${String(store.chunks)}, not the local one (SNAPYARD_TEST_BACKEND=${TEST_BACKEND}): this test belongs to the local pass only`);
      return store.chunks;
    },
    async stop() {
      await server.close();
      await store.close();
      if (owned) {
        rmSync(dataDir, { recursive: true, force: true });
        if (location.store) await dropRemote(location as RemoteLocation);
      }
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

import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BlobStore } from './blobs/blob-store.js';
import { LocalChunkStore } from './chunks/local-chunk-store.js';
import type { MaintainedChunkStore } from './chunks/maintained-chunk-store.js';
import type { MetadataStore } from './meta/metadata-store.js';
import { SqliteMetadataStore } from './meta/sqlite-metadata-store.js';
import { openPostgresMetadata, PostgresMetadataStore } from './meta/postgres-metadata-store.js';
import { openPostgresChunkCatalog } from './chunks/postgres-chunk-catalog.js';
import { MaintainedRemoteChunkStore } from './chunks/remote-chunk-maintenance.js';
import { locationBytes } from './chunks/remote-chunk-store.js';
import { parseS3Url, S3PackDriver } from './chunks/s3-pack-driver.js';
import { SnapyardError } from './errors.js';
import { UploadSessions } from './coord/upload-sessions.js';
import type { ReadCheck } from './chunks/chunk-codec.js';
import type { FastCDCParams } from './blobs/fastcdc.js';
import { ChunkPins } from './coord/chunk-pins.js';
import { AsyncLock } from './coord/commit-lock.js';
import { resolveLimits, type Limits } from './limits.js';
import { DEFAULT_CACHE_MEMORY, MemoryBudget } from './memory-budget.js';
import { indexMemoryBytes } from './blobs/blob-index.js';
import { SessionQuota } from './coord/session-quota.js';
import { LocalCoordinator, type Coordinator } from './coord/coordinator.js';
import { PostgresCoordinator } from './coord/postgres-coordinator.js';
import { DiskReserve } from './maintenance/disk-reserve.js';

/**
 * The embedded default store: everything under one data directory.
 *
 *   <data>/meta.db         SQLite metadata (metadata-schema.ts), with -wal/-shm beside it
 *   <data>/store/          local chunk store (layout: pack-files.ts)
 *   <data>/reserve         space kept back so deletions work on a full disk (disk-reserve.ts)
 *   <data>/spool/          qcow2 uploads being received (guest-view chunking needs
 *                          random access); emptied at start
 *
 * Upload sessions are chunked as their bytes arrive (upload-sessions.ts): they
 * keep no temporary copy, and do not survive a restart.
 *
 * With `metadata: postgres://...` the metadata is in PostgreSQL
 * (meta/postgres-metadata-store.ts) instead of <data>/meta.db, shared by
 * replicas. Upload records then carry the process that holds the session;
 * at start a replica clears its own and those idle past the upload TTL
 * (expired wherever they were), never another replica's live ones.
 *
 * With `store: s3://...` as well, chunk packs are objects in the bucket and
 * their catalog is in the same PostgreSQL database
 * (chunks/remote-chunk-store.ts); the data directory then keeps only what is
 * this process's: <data>/remote/spool (segments being written),
 * <data>/remote/pack-cache (the packs it put lately, read locally; 1 GiB),
 * <data>/remote/sketches (delta sketches), <data>/remote/quarantine.
 */
export interface StoreConfig {
  dataDir: string;
  /** zstd level for new chunks. */
  level?: number;
  /** How chunks read back are checked (chunks/chunk-codec.ts; default 'checksum'). */
  readCheck?: ReadCheck;
  /** Chunk worker threads. */
  workers?: number;
  params?: FastCDCParams;
  /** Upload and push sessions idle longer than this expire (default 1 h). */
  uploadTtlMs?: number;
  /** Resource limits (limits.ts; defaults for whatever is not given). */
  limits?: Partial<Limits>;
  /** Where the metadata lives: a postgres:// (postgresql://) URL; default SQLite at <data>/meta.db. */
  metadata?: string;
  /**
   * Where the chunks live: `s3://BUCKET[/PREFIX]?endpoint=URL&region=R` puts
   * their packs in S3 and their catalog in the metadata's PostgreSQL database
   * (so it needs `metadata: postgres://...`); credentials from the AWS SDK's
   * usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profile files).
   * Default: packs on local disk in <data>/store.
   */
  store?: string;
  /**
   * Where other replicas reach this one (`serve --advertise-url`, e.g. the
   * pod's address): recorded with its OCI upload sessions, so a replica that
   * gets a request of one forwards it here. PostgreSQL metadata only.
   */
  advertiseUrl?: string;
  /** One budget for the caches' memory (memory-budget.ts; default 128 MiB; `serve --cache-memory`). */
  cacheMemoryBytes?: number;
}

const POSTGRES_URL = /^postgres(ql)?:\/\//;

/** The metadata store `cfg` names. */
async function openMetadata(cfg: StoreConfig, uploadTtlMs: number, onFull: () => boolean): Promise<MetadataStore> {
  if (cfg.metadata === undefined) return new SqliteMetadataStore(join(cfg.dataDir, 'meta.db'), { onFull });
  if (POSTGRES_URL.test(cfg.metadata)) return openPostgresMetadata(cfg.metadata, { uploadStaleMs: uploadTtlMs, ownerUrl: cfg.advertiseUrl ?? null });
  throw new SnapyardError('INVALID_ARGUMENT', `metadata ${JSON.stringify(cfg.metadata.replace(/\/\/[^@/]*@/, '//…@'))}: expected a postgres://USER@HOST:PORT/DB URL (or nothing, for SQLite in the data directory)`);
}

/** The chunk store `cfg` names (checked before anything is opened). */
async function openChunks(cfg: StoreConfig, memory: MemoryBudget): Promise<MaintainedChunkStore> {
  const level = { ...(cfg.level !== undefined ? { level: cfg.level } : {}), ...(cfg.readCheck !== undefined ? { readCheck: cfg.readCheck } : {}) };
  if (cfg.store === undefined) {
    return new LocalChunkStore({ root: join(cfg.dataDir, 'store'), ...level, ...(cfg.workers !== undefined ? { workers: cfg.workers } : {}) });
  }
  const driver = new S3PackDriver({ location: cfg.store });
  try {
    const catalog = await openPostgresChunkCatalog(cfg.metadata!);
    const root = join(cfg.dataDir, 'remote');
    return new MaintainedRemoteChunkStore({ driver, catalog, spoolDir: join(root, 'spool'), sketchDir: join(root, 'sketches'), packCacheDir: join(root, 'pack-cache'), ...level, ...(cfg.workers !== undefined ? { workers: cfg.workers } : {}), locationCache: memory.cache('remote-locations', locationBytes) });
  } catch (e) {
    await driver.close();
    throw e;
  }
}

/** Refuses a store / metadata pair that cannot work, before anything is opened. */
function checkLocations(cfg: StoreConfig): void {
  if (cfg.advertiseUrl !== undefined && !/^https?:\/\/[^/?#]+\/?$/.test(cfg.advertiseUrl)) {
    throw new SnapyardError('INVALID_ARGUMENT', `advertise URL ${JSON.stringify(cfg.advertiseUrl)}: expected http(s)://HOST:PORT, where the other replicas reach this one`);
  }
  if (cfg.store === undefined) return;
  if (!cfg.store.startsWith('s3://')) {
    throw new SnapyardError('INVALID_ARGUMENT', `store ${JSON.stringify(cfg.store)}: expected s3://BUCKET[/PREFIX]?endpoint=URL&region=R (or nothing, for packs in the data directory)`);
  }
  parseS3Url(cfg.store);
  if (cfg.metadata === undefined || !POSTGRES_URL.test(cfg.metadata)) {
    throw new SnapyardError('INVALID_ARGUMENT', `store ${cfg.store.replace(/\?.*$/, '')} keeps its chunk catalog in PostgreSQL: give metadata postgres://USER@HOST:PORT/DB as well`);
  }
}

export interface Store {
  /** The data directory (readiness checks its free space). */
  dataDir: string;
  meta: MetadataStore;
  chunks: MaintainedChunkStore;
  blobs: BlobStore;
  uploads: UploadSessions;
  /** Chunks GC must keep whatever its grace (open upload and push sessions): chunk-pins.ts. */
  pins: ChunkPins;
  /** The commit lock (commit-lock.ts): blob, push and manifest commits, and GC's delete step. */
  lock: AsyncLock;
  /** The caches' one memory budget (memory-budget.ts): blob indexes, delta caches, frames, remote reads. */
  memory: MemoryBudget;
  /** What replicas agree on (coord/coordinator.ts): push sessions, upload holders, the maintenance lease (one gc or verify at a time). */
  coord: Coordinator;
  /** Idle upload / push sessions expire after this. */
  uploadTtlMs: number;
  /** Resource limits (limits.ts). */
  limits: Limits;
  /** Open upload and push sessions, per user and in total (session-quota.ts). */
  sessions: SessionQuota;
  /** Space kept back for deletions on a full disk (disk-reserve.ts): DIR/reserve. */
  reserve: DiskReserve;
  /** Runs `fn` when the store closes, before its files are (caches that keep files of the store open). */
  onClose(fn: () => void | Promise<void>): void;
  close(): Promise<void>;
}

export async function openStore(cfg: StoreConfig): Promise<Store> {
  checkLocations(cfg);
  const limits = resolveLimits(cfg.limits);
  const closing: Array<() => void | Promise<void>> = [];
  mkdirSync(cfg.dataDir, { recursive: true });
  const reserve = new DiskReserve(join(cfg.dataDir, 'reserve'), limits.reserveBytes);
  reserve.refill();
  const uploadTtlMs = cfg.uploadTtlMs ?? 60 * 60 * 1000;
  const memory = new MemoryBudget(cfg.cacheMemoryBytes ?? DEFAULT_CACHE_MEMORY);
  const meta = await openMetadata(cfg, uploadTtlMs, () => reserve.release());
  let chunks: MaintainedChunkStore;
  try {
    chunks = await openChunks(cfg, memory);
  } catch (e) {
    await meta.close();
    throw e;
  }
  const spoolDir = join(cfg.dataDir, 'spool');
  rmSync(spoolDir, { recursive: true, force: true }); // leftovers of a crash: uploads that never finished
  const coord: Coordinator =
    meta instanceof PostgresMetadataStore
      ? new PostgresCoordinator(meta.db, { owner: meta.owner, schema: meta.schema, selfUrl: cfg.advertiseUrl ?? null, sessionTtlMs: uploadTtlMs, now: () => meta.now() })
      : new LocalCoordinator(() => meta.now(), uploadTtlMs);
  const pins = new ChunkPins();
  const lock = new AsyncLock();
  const blobs = new BlobStore(meta, chunks, cfg.params, spoolDir, memory.cache('blob-indexes', indexMemoryBytes), pins, lock);
  const uploads = new UploadSessions(blobs, { ttlMs: uploadTtlMs, onExpire: (id) => void meta.deleteUpload(id).catch(() => {}) });
  await meta.clearUploads(); // sessions of an earlier process cannot be resumed (PostgreSQL: this process's and stale ones)
  return {
    dataDir: cfg.dataDir,
    meta,
    chunks,
    blobs,
    uploads,
    pins,
    lock,
    coord,
    memory,
    uploadTtlMs,
    limits,
    sessions: new SessionQuota(limits.maxSessionsPerUser, limits.maxSessionsTotal),
    reserve,
    onClose: (fn) => void closing.push(fn),
    async close() {
      for (const fn of closing.splice(0)) await fn();
      uploads.close();
      await coord.close();
      await chunks.close();
      await meta.close();
    },
  };
}

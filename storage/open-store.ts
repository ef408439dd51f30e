import { join } from 'node:path';
import { BlobStore } from './blob-store.js';
import { LocalChunkStore } from './local-chunk-store.js';
import { Metadata } from './metadata.js';
import { UploadFiles } from './upload-files.js';
import type { FastCDCParams } from './fastcdc.js';

/**
 * The embedded default store: everything under one data directory.
 *
 *   <data>/meta.db         SQLite metadata (metadata-schema.ts), with -wal/-shm beside it
 *   <data>/store/          local chunk store (layout: local-chunk-files.ts)
 *   <data>/uploads/<id>    bytes of open upload sessions (upload-files.ts)
 */
export interface StoreConfig {
  dataDir: string;
  /** zstd level for new chunks. */
  level?: number;
  /** Chunk worker threads. */
  workers?: number;
  params?: FastCDCParams;
}

export interface Store {
  meta: Metadata;
  chunks: LocalChunkStore;
  blobs: BlobStore;
  uploads: UploadFiles;
  close(): Promise<void>;
}

export function openStore(cfg: StoreConfig): Store {
  const meta = new Metadata(join(cfg.dataDir, 'meta.db'));
  const chunks = new LocalChunkStore({
    root: join(cfg.dataDir, 'store'),
    ...(cfg.level !== undefined ? { level: cfg.level } : {}),
    ...(cfg.workers !== undefined ? { workers: cfg.workers } : {}),
  });
  const blobs = new BlobStore(meta, chunks, cfg.params);
  const uploads = new UploadFiles(join(cfg.dataDir, 'uploads'));
  return {
    meta,
    chunks,
    blobs,
    uploads,
    async close() {
      await chunks.close();
      meta.close();
    },
  };
}

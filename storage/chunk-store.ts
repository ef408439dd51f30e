import type { Digest } from './digest.js';

/** Result of adding a chunk to a store. */
export interface AddResult {
  digest: Digest;
  /** Uncompressed length. */
  size: number;
  /** False when the store already had the chunk (only its time was refreshed). */
  written: boolean;
  /** Bytes the chunk occupies in the store (header included). */
  storedSize: number;
}

/**
 * A content-addressed chunk store. Chunks are named by the sha256 of their
 * uncompressed bytes; every read verifies it. Implementations: LocalChunkStore
 * (disk); later S3 and a cache wrapper (fall back on ChunkMissingError, never on
 * ChunkCorruptError).
 */
export interface ChunkStore {
  has(digest: Digest): Promise<boolean>;
  /** Uncompressed, verified bytes. Throws ChunkMissingError or ChunkCorruptError. */
  get(digest: Digest): Promise<Buffer>;
  /** The stored form (see chunk-codec.ts), unverified: for serving chunks as stored. */
  getStored(digest: Digest): Promise<Buffer>;
  /** Hashes, dedups and stores bytes; returns their digest. */
  add(raw: Uint8Array): Promise<AddResult>;
  /** Stores bytes that must hash to `digest` (throws DIGEST_MISMATCH otherwise). */
  put(digest: Digest, raw: Uint8Array): Promise<AddResult>;
  close(): Promise<void>;
}

/** Enumeration and removal, for GC and verify: kept apart from the data path. */
export interface PrunableChunkStore {
  list(): AsyncIterable<{ digest: Digest; storedSize: number; mtimeMs: number }>;
  remove(digest: Digest): Promise<void>;
}

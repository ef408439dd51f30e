import type { Digest, StreamDigester } from '../digest.js';

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

/** Where a chunk's bytes go in a file: [from, to, fileOffset] triples (ChunkWriter.addStored). */
export interface ChunkPlace {
  path: string;
  spans: number[];
}

/** Ingest-side writing of many chunks in a row (batched by stores that can). */
export interface ChunkWriter {
  /**
   * Hashes and dedups `raw`; new bytes are copied before the promise resolves,
   * so the caller may reuse the memory afterwards.
   */
  add(raw: Uint8Array): Promise<{ digest: Digest; written: boolean }>;
  /**
   * Optional: a chunk in its stored form (chunk-codec.ts) under the digest it
   * claims, as a registry sends it. Kept as it is (no recompression) once it
   * decodes to `rawLength` bytes that hash to `digest` (checked off this thread);
   * one that does not fails the writer with CHUNK_CORRUPT (from finish() at
   * the latest), and nothing of its batch is kept. Memory is copied as add()'s.
   * With `place`, the bytes that check decoded are also written into the file
   * at `place.path` (it exists) at `place.spans`, [from, to, fileOffset] triples
   * (a pull writing its image as chunks arrive: nothing decoded twice); `placed`
   * resolves once they are (rejects as the batch does). Absent when the store
   * already had the chunk: the caller writes it.
   */
  addStored?(digest: Digest, stored: Uint8Array, rawLength: number, place?: ChunkPlace): Promise<{ digest: Digest; written: boolean; placed?: Promise<void> }>;
  /** Waits until every chunk added is stored; returns what was new. */
  finish(): Promise<{ newChunks: number; newStoredBytes: number }>;
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
  /**
   * Several chunks' bytes, concatenated, each verified and checked against its
   * expected length (from a chunk index). One call per run of chunks keeps
   * per-chunk overhead off the read path.
   */
  getConcat(digests: Digest[], lengths: number[]): Promise<Buffer>;
  /**
   * Optional: hands back a buffer returned by getConcat (or a view of it) once
   * nothing uses it any more, so the next read can reuse its memory.
   */
  release?(buf: Uint8Array): void;
  /**
   * Optional: a buffer of `bytes` bytes from the same reused memory (null when
   * `bytes` is more than a reused buffer holds), for a copy of getConcat results
   * that the caller hands back through release() once done. Reads that serve
   * a byte stream then allocate nothing per batch: every new large buffer is
   * external memory that drives V8's garbage collections.
   */
  scratch?(bytes: number): Buffer | null;
  /** The stored form (see chunk-codec.ts), unverified: for serving chunks as stored. */
  getStored(digest: Digest): Promise<Buffer>;
  /**
   * Optional: chunks about to be read one by one (the delta encoder's), so
   * a remote store locates them all in one catalog call first.
   */
  prepareReads?(digests: Digest[]): Promise<void>;
  /** Hashes, dedups and stores bytes; returns their digest. */
  add(raw: Uint8Array): Promise<AddResult>;
  /** Optional: a digester of a whole stream that hashes off this thread. */
  digester?(): StreamDigester;
  /** A writer for a run of chunks (a blob being ingested). */
  writer(): ChunkWriter;
  /** Stores bytes that must hash to `digest` (throws DIGEST_MISMATCH otherwise). */
  put(digest: Digest, raw: Uint8Array): Promise<AddResult>;
  /** Makes every chunk added so far durable; called before anything that references them is committed. */
  flush(): Promise<void>;
  /**
   * Optional: the chunk is durably held (flushed and indexed), not merely on
   * its way. What a blob commit checks; stores without it use has().
   */
  durable?(digest: Digest): Promise<boolean>;
  /**
   * Optional, batched durable(): the positions in `raws` (32-byte sha256
   * digests) of chunks not durably held. One call per batch (one query on a
   * remote catalog), whatever the batch holds.
   */
  missingDurable?(raws: Uint8Array[]): Promise<number[]>;
  close(): Promise<void>;
}

/** Enumeration and removal, for GC and verify: kept apart from the data path. */
export interface PrunableChunkStore {
  list(): AsyncIterable<{ digest: Digest; storedSize: number; mtimeMs: number }>;
  remove(digest: Digest): Promise<void>;
}

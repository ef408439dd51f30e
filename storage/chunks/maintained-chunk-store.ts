/**
 * What the registry asks of its chunk store beyond reading and writing
 * chunks: listing sizes and stats, prefix lookups for the compact wire form,
 * gc (mark, sweep, compaction), verify and repair, and what delta encoding
 * uses. Implemented by LocalChunkStore (packs on local disk); a store over
 * S3 packs and a shared catalog implements the same.
 */
import type { Digest } from '../digest.js';
import type { ChunkStore, PrunableChunkStore } from './chunk-store.js';

export interface ChunkStoreStats {
  chunks: number;
  /** Stored bytes (compressed records). */
  stored: number;
  /** Uncompressed bytes. */
  raw: number;
}

export interface CompactOptions {
  /** Packs whose live bytes are below this fraction of their size are rewritten (0 = none for this reason). */
  minLive: number;
  /** Unused pack bytes allowed, as a fraction of the live bytes (Infinity = no such bound). */
  maxUnused: number;
  /** Called before each destructive step (the maintenance lease's fence): throws to stop. */
  fence?: () => Promise<void>;
}

export interface CompactReport {
  rewritten: number;
  deleted: number;
  freedBytes: number;
}

export interface VerifyChunksReport {
  /** Chunks whose stored record is damaged, with what is wrong. */
  corrupt: Map<Digest, string>;
  chunks: number;
  storedBytes: number;
}

export interface MaintainedChunkStore extends ChunkStore, PrunableChunkStore {
  /** Flushes unless the disk is full (then what is committed stays as it is). */
  flushIfRoom(): Promise<void>;
  /** Stored bytes of each chunk given by raw digest (record header included); null for ones not held. */
  storedLengths(raws: Uint8Array[]): Promise<Array<number | null>>;
  /**
   * Uncompressed lengths of chunks given by raw digest, null for ones not
   * held; one lookup per call. With `touch` (a push being told what the store
   * holds), found chunks count as just added, so gc's grace keeps them for
   * the push on every replica (a chunk gc removed meanwhile answers null).
   */
  rawLengths(raws: Uint8Array[], opts?: { touch?: boolean }): Promise<Array<number | null>>;
  /** For each prefix (the compact wire form): the one held digest starting with it, null when none, 'ambiguous' when several; `touch` as for rawLengths. */
  resolvePrefixes(prefixes: Uint8Array[], opts?: { touch?: boolean }): Promise<Array<Buffer | null | 'ambiguous'>>;
  stats(): Promise<ChunkStoreStats>;
  /** Tasks queued on worker threads (a gauge). */
  queueDepth(): number;

  // ---- gc (storage/maintenance/gc.ts) ----
  /** From here until endMark, chunks added are remembered as live (a push racing the mark). */
  beginMark(): void;
  endMark(): void;
  /** Deletes chunks last added before `cutoffMs` that `keep` rejects (dryRun: counts them). */
  sweep(cutoffMs: number, keep: (digest: Digest) => boolean, dryRun: boolean): Promise<{ chunks: number; storedBytes: number }>;
  /** Gives back the space of deleted chunks (pack compaction). */
  compact(opts: CompactOptions): Promise<CompactReport>;

  // ---- verify (storage/maintenance/verify.ts) ----
  /** Reads and checks every committed chunk, `lanes` reads at a time. */
  verifyChunks(opts: { lanes: number }): Promise<VerifyChunksReport>;
  /** Moves a damaged chunk aside so it can be pushed again; a description of where it went, null when it was not held. */
  quarantine(digest: Digest): Promise<string | null>;

  // ---- delta encoding (server/chunk-encoder.ts) ----
  /** Where the resemblance sketches of this store's chunks are kept (a directory). */
  readonly sketchDir: string;
  sketchMany(digests: Digest[], lengths: number[]): Promise<Buffer[]>;
  compressWithDictOf(digests: Digest[], lengths: number[], level: number): Promise<Buffer>;
}

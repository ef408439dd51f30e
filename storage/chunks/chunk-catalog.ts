/**
 * Where each chunk's record is: the catalog of a chunk store, apart from the
 * pack bytes (pack-driver.ts). Keys are raw sha256 digests (32 bytes).
 * Implementations: SqliteChunkCatalog (sqlite-chunk-catalog.ts, the local
 * store's index.db) and PostgresChunkCatalog (postgres-chunk-catalog.ts,
 * shared by the replicas of one registry).
 *
 * Sizes are the records' stored lengths as the catalog holds them (without
 * the pack record header, which the chunk store adds).
 *
 * Every call is one statement or one transaction; batch calls (lookup,
 * commit, move, remove) take thousands of digests at a time, so a remote
 * catalog costs one round trip per batch, not per chunk.
 */

/** A chunk's place: its record in a pack, and the last time it was added or found held. */
export interface CatalogEntry {
  pack: string;
  /** Offset of the record (its header) in the pack. */
  offset: number;
  /** Stored length (compressed or not, without the record header). */
  length: number;
  /** Uncompressed length. */
  rawLength: number;
  mtimeMs: number;
}

/** A chunk written to a pack, to be recorded. */
export interface NewCatalogEntry {
  raw: Uint8Array;
  pack: string;
  offset: number;
  length: number;
  rawLength: number;
}

export interface CatalogMove {
  raw: Uint8Array;
  from: { pack: string; offset: number };
  to: { pack: string; offset: number };
}

export interface ChunkCatalog {
  /** Where it is, without credentials (for messages). */
  readonly location: string;
  /** The entry of each raw digest (null when not held), in the order asked; one query per call. */
  lookup(raws: Uint8Array[]): Promise<Array<CatalogEntry | null>>;
  /**
   * Records written chunks and refreshes the time of `touched` (chunks a
   * writer found held and reuses), in one transaction. A chunk already
   * recorded keeps its first location (its time is refreshed: it is in use).
   * Answers the positions in `touched` that are not held any more (gc swept
   * them since the writer looked): the writer must not rely on them.
   */
  commit(added: NewCatalogEntry[], touched: Uint8Array[], nowMs: number): Promise<{ absent: number[] }>;
  /**
   * For each prefix (the compact wire form), the one held digest starting
   * with it, null when none, 'ambiguous' when several: one call for the
   * batch (PostgreSQL: one statement).
   */
  resolvePrefixes(prefixes: Uint8Array[]): Promise<Array<Uint8Array | null | 'ambiguous'>>;
  /**
   * gc: deletes the rows whose time is before `cutoffMs` and whose digest
   * `keep` rejects (dryRun: only counts them), in batches (memory bounded
   * whatever the catalog holds). A row whose time reaches the cutoff before
   * its batch is deleted (a touch from any writer) stays. Answers what went.
   */
  sweep(cutoffMs: number, keep: (raw: Uint8Array) => boolean, dryRun: boolean): Promise<{ chunks: number; storedBytes: number }>;
  /** Records per pack (chunks, stored bytes): what compaction weighs. */
  packLive(): Promise<Map<string, { chunks: number; storedBytes: number }>>;
  /** The records of one pack, by offset: what compaction copies. */
  inPack(pack: string): Promise<Array<{ raw: Uint8Array; offset: number; length: number }>>;
  /** Points rows still at `from` to `to` (compaction), in one transaction; answers the rows moved. */
  move(moves: CatalogMove[]): Promise<number>;
  /** Every row, by digest, in pages (verify). */
  all(): AsyncIterable<{ raw: Uint8Array } & CatalogEntry>;
  remove(raws: Uint8Array[]): Promise<void>;
  stats(): Promise<{ chunks: number; storedBytes: number; rawBytes: number }>;
  close(): Promise<void>;
}

/** Rows a batched catalog call handles at once (sweep and all() pages) unless told otherwise. */
export const CATALOG_PAGE = 5000;

/** Digests as hex keys, for matching rows to the positions asked. */
export function hexKey(raw: Uint8Array): string {
  return Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('hex');
}

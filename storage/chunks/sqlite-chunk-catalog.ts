/**
 * The embedded chunk catalog: the local store's index.db (pack-index.ts, the
 * same file and schema, so a store written before opens with it) behind the
 * async ChunkCatalog interface. SQLite calls are synchronous; each method is
 * one statement or one transaction, so nothing interleaves inside it.
 */
import { digestFromRaw, rawOf } from '../digest.js';
import { CATALOG_PAGE, type CatalogEntry, type CatalogMove, type ChunkCatalog, type NewCatalogEntry } from './chunk-catalog.js';
import { PackIndex } from './pack-index.js';

export interface SqliteChunkCatalogOptions {
  /** Rows per sweep batch and per all() page (default CATALOG_PAGE). */
  pageSize?: number;
}

export class SqliteChunkCatalog implements ChunkCatalog {
  readonly location: string;
  private readonly pageSize: number;
  private readonly owned: boolean;

  /** Over an index the caller opened (`owned`: close() closes it). */
  constructor(private readonly index: PackIndex, location: string, opts: SqliteChunkCatalogOptions & { owned?: boolean } = {}) {
    this.location = location;
    this.pageSize = opts.pageSize ?? CATALOG_PAGE;
    this.owned = opts.owned ?? false;
  }

  /** Opens (creating if need be) the index file at `path`. */
  static open(path: string, opts: SqliteChunkCatalogOptions = {}): SqliteChunkCatalog {
    return new SqliteChunkCatalog(new PackIndex(path), path, { ...opts, owned: true });
  }

  async lookup(raws: Uint8Array[]): Promise<Array<CatalogEntry | null>> {
    return this.index.lookupRaw(raws);
  }

  async commit(added: NewCatalogEntry[], touched: Uint8Array[], nowMs: number): Promise<{ absent: number[] }> {
    return { absent: this.index.commitRaw(added, touched, nowMs) };
  }

  async resolvePrefixes(prefixes: Uint8Array[]): Promise<Array<Uint8Array | null | 'ambiguous'>> {
    return prefixes.map((p) => this.index.resolvePrefix(Buffer.from(p)));
  }

  async sweep(cutoffMs: number, keep: (raw: Uint8Array) => boolean, dryRun: boolean): Promise<{ chunks: number; storedBytes: number }> {
    let after: Uint8Array = Buffer.alloc(0);
    let chunks = 0;
    let storedBytes = 0;
    for (;;) {
      const rows = this.index.olderPage(after, cutoffMs, this.pageSize);
      if (rows.length === 0) break;
      after = rows[rows.length - 1]![0];
      const victims = rows.filter(([raw]) => !keep(raw));
      if (dryRun) {
        chunks += victims.length;
        for (const [, length] of victims) storedBytes += length;
      } else {
        const r = this.index.removeOlder(victims.map(([raw]) => raw), cutoffMs);
        chunks += r.chunks;
        storedBytes += r.stored;
      }
      if (rows.length < this.pageSize) break;
      // Yield between batches: a sweep of millions of rows does not hold the event loop.
      await new Promise<void>((r) => setImmediate(r));
    }
    return { chunks, storedBytes };
  }

  async packLive(): Promise<Map<string, { chunks: number; storedBytes: number }>> {
    const out = new Map<string, { chunks: number; storedBytes: number }>();
    for (const [pack, v] of this.index.packLive()) out.set(pack, { chunks: v.chunks, storedBytes: v.stored });
    return out;
  }

  async inPack(pack: string): Promise<Array<{ raw: Uint8Array; offset: number; length: number }>> {
    return this.index.inPack(pack).map((r) => ({ raw: rawOf(r.digest), offset: r.loc.offset, length: r.loc.length }));
  }

  async move(moves: CatalogMove[]): Promise<number> {
    // The index matches rows on pack and offset; the length is not compared.
    return this.index.move(moves.map((m) => ({ digest: digestFromRaw(m.raw), from: { ...m.from, length: 0 }, to: { ...m.to, length: 0 } })));
  }

  async *all(): AsyncIterable<{ raw: Uint8Array } & CatalogEntry> {
    let after: Uint8Array = Buffer.alloc(0);
    for (;;) {
      // A page at a time: no statement stays open while the caller awaits (it may commit meanwhile).
      const rows = this.index.page(after, this.pageSize);
      if (rows.length === 0) return;
      after = rows[rows.length - 1]!.raw;
      yield* rows;
    }
  }

  async remove(raws: Uint8Array[]): Promise<void> {
    for (const raw of raws) this.index.remove(digestFromRaw(raw));
  }

  async stats(): Promise<{ chunks: number; storedBytes: number; rawBytes: number }> {
    const s = this.index.stats();
    return { chunks: s.chunks, storedBytes: s.stored, rawBytes: s.raw };
  }

  async close(): Promise<void> {
    if (this.owned) this.index.close();
  }
}

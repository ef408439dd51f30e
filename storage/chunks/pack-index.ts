import { openSharedSqlite } from '../sqlite-open.js';
import Database from 'better-sqlite3';
import { digestFromRaw, rawOf, type Digest } from '../digest.js';
import type { RecordLocation } from './pack-files.js';
import { DigestBloom } from './bloom.js';

export interface IndexedChunk extends RecordLocation {
  digest: Digest;
  rawLength: number;
  mtimeMs: number;
}

/**
 * Where each chunk of a local store lives: SQLite (WAL), digest (32 raw bytes)
 * -> pack, record offset, stored length, raw length, last time it was added.
 * Versioned with PRAGMA user_version. Used from one thread (the store's owner).
 */
export class PackIndex {
  private readonly db: Database.Database;
  private readonly s;
  private readonly packIds = new Map<string, number>();
  private readonly packNames = new Map<number, string>();
  /** Every digest in the index (rebuilt when it fills up): most lookups of new chunks end here. */
  private bloom: DigestBloom;

  constructor(path: string) {
    // Several processes (pods on one node) may open a new index at once: both
    // the switch to WAL and the schema need a lock (sqlite-open.ts).
    this.db = openSharedSqlite(path);
    // The version is read again inside an IMMEDIATE transaction, so only one
    // opener creates the tables; the others see version 1 and go on.
    const v = this.db.transaction(() => {
      const v = this.db.pragma('user_version', { simple: true }) as number;
      if (v === 0) this.db.exec(`
        CREATE TABLE packs (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        CREATE TABLE chunks (
          digest BLOB PRIMARY KEY,
          pack INTEGER NOT NULL,
          offset INTEGER NOT NULL,
          length INTEGER NOT NULL,
          raw_length INTEGER NOT NULL,
          mtime_ms INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX chunks_by_pack ON chunks(pack);
        PRAGMA user_version = 1;
      `);
      return v;
    }).immediate();
    if (v > 1) {
      throw new Error(`chunk index schema ${v} is newer than this snapyard`);
    }
    this.ensureTotals();
    const p = (sql: string) => this.db.prepare(sql);
    this.s = {
      get: p('SELECT pack, offset, length, raw_length AS rawLength, mtime_ms AS mtimeMs FROM chunks WHERE digest = ?'),
      has: p('SELECT 1 FROM chunks WHERE digest = ?').pluck(),
      fromPrefix: p('SELECT digest FROM chunks WHERE digest >= ? ORDER BY digest LIMIT 2').pluck(),
      rawLength: p('SELECT raw_length FROM chunks WHERE digest = ?').pluck(),
      storedLength: p('SELECT length FROM chunks WHERE digest = ?').pluck(),
      locate: p('SELECT pack, offset, length FROM chunks WHERE digest = ?').raw(),
      insert: p('INSERT OR IGNORE INTO chunks (digest, pack, offset, length, raw_length, mtime_ms) VALUES (?, ?, ?, ?, ?, ?)'),
      touch: p('UPDATE chunks SET mtime_ms = ? WHERE digest = ?'),
      remove: p('DELETE FROM chunks WHERE digest = ?'),
      addPack: p('INSERT OR IGNORE INTO packs (name) VALUES (?)'),
      packId: p('SELECT id FROM packs WHERE name = ?').pluck(),
      packs: p('SELECT id, name FROM packs'),
      digests: p('SELECT digest FROM chunks').pluck(),
      count: p('SELECT COUNT(*) FROM chunks').pluck(),
      all: p('SELECT digest, pack, offset, length, raw_length AS rawLength, mtime_ms AS mtimeMs FROM chunks ORDER BY digest'),
      older: p('SELECT digest, pack, length FROM chunks WHERE mtime_ms < ?').raw(),
      removeOlder: p('DELETE FROM chunks WHERE digest = ? AND mtime_ms < ?'),
      inPack: p('SELECT digest, offset, length FROM chunks WHERE pack = ? ORDER BY offset').raw(),
      move: p('UPDATE chunks SET pack = ?, offset = ? WHERE digest = ? AND pack = ? AND offset = ?'),
      packLive: p('SELECT pack, COUNT(*) AS chunks, SUM(length) AS stored FROM chunks GROUP BY pack'),
      stats: p('SELECT chunks, stored, raw FROM chunk_totals WHERE id = 0'),
      page: p('SELECT digest, pack, offset, length, raw_length AS rawLength, mtime_ms AS mtimeMs FROM chunks WHERE digest > ? ORDER BY digest LIMIT ?'),
      olderPage: p('SELECT digest, length FROM chunks WHERE digest > ? AND mtime_ms < ? ORDER BY digest LIMIT ?').raw(),
      removeOlderLength: p('DELETE FROM chunks WHERE digest = ? AND mtime_ms < ? RETURNING length').pluck(),
    };
    for (const r of this.s.packs.all() as Array<{ id: number; name: string }>) {
      this.packIds.set(r.name, r.id);
      this.packNames.set(r.id, r.name);
    }
    this.bloom = this.buildBloom(0);
  }

  /**
   * Running totals of the index (chunks, stored and raw bytes), kept by
   * triggers: stats() reads one row instead of summing every chunk (a scan
   * that blocked the event loop for each metrics scrape, longer as the store
   * grows). Added to an index that lacks them in one IMMEDIATE transaction
   * (no writer in between the sum and the triggers); the schema version stays
   * 1, so an older snapyard still opens the index, and its writes keep the
   * totals too (the triggers live in the database).
   */
  private ensureTotals(): void {
    const has = () => this.db.prepare("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'chunk_totals_%'").pluck().get() === 3;
    if (has()) return;
    this.db.transaction(() => {
      if (has()) return;
      this.db.exec(`
        DROP TABLE IF EXISTS chunk_totals;
        CREATE TABLE chunk_totals (id INTEGER PRIMARY KEY CHECK (id = 0), chunks INTEGER NOT NULL, stored INTEGER NOT NULL, raw INTEGER NOT NULL);
        INSERT INTO chunk_totals SELECT 0, COUNT(*), COALESCE(SUM(length), 0), COALESCE(SUM(raw_length), 0) FROM chunks;
        DROP TRIGGER IF EXISTS chunk_totals_insert;
        DROP TRIGGER IF EXISTS chunk_totals_delete;
        DROP TRIGGER IF EXISTS chunk_totals_update;
        CREATE TRIGGER chunk_totals_insert AFTER INSERT ON chunks BEGIN
          UPDATE chunk_totals SET chunks = chunks + 1, stored = stored + NEW.length, raw = raw + NEW.raw_length WHERE id = 0;
        END;
        CREATE TRIGGER chunk_totals_delete AFTER DELETE ON chunks BEGIN
          UPDATE chunk_totals SET chunks = chunks - 1, stored = stored - OLD.length, raw = raw - OLD.raw_length WHERE id = 0;
        END;
        CREATE TRIGGER chunk_totals_update AFTER UPDATE OF length, raw_length ON chunks BEGIN
          UPDATE chunk_totals SET stored = stored - OLD.length + NEW.length, raw = raw - OLD.raw_length + NEW.raw_length WHERE id = 0;
        END;
      `);
    }).immediate();
  }

  private buildBloom(extra: number): DigestBloom {
    const n = this.s.count.get() as number;
    const b = new DigestBloom(Math.max(1 << 20, (n + extra) * 2));
    for (const d of this.s.digests.iterate() as Iterable<Buffer>) b.add(d);
    return b;
  }

  private packId(name: string): number {
    let id = this.packIds.get(name);
    if (id === undefined) {
      this.s.addPack.run(name);
      id = this.s.packId.get(name) as number;
      this.packIds.set(name, id);
      this.packNames.set(id, name);
    }
    return id;
  }

  get(digest: Digest): IndexedChunk | null {
    const r = this.s.get.get(rawOf(digest)) as { pack: number; offset: number; length: number; rawLength: number; mtimeMs: number } | undefined;
    if (!r) return null;
    return { digest, pack: this.packNames.get(r.pack)!, offset: r.offset, length: r.length, rawLength: r.rawLength, mtimeMs: r.mtimeMs };
  }

  /** Where a chunk's record is (the read path: no more than it needs). */
  locate(digest: Digest, raw: Uint8Array = rawOf(digest)): RecordLocation | null {
    if (!this.bloom.mayHave(raw)) return null;
    const r = this.s.locate.get(raw) as [number, number, number] | undefined;
    return r ? { pack: this.packNames.get(r[0])!, offset: r[1], length: r[2] } : null;
  }

  /** Stored length of a chunk, or null when it is not held. */
  storedLength(digest: Digest, raw: Uint8Array = rawOf(digest)): number | null {
    if (!this.bloom.mayHave(raw)) return null;
    return (this.s.storedLength.get(raw) as number | undefined) ?? null;
  }

  /** Stored lengths of chunks given by raw digest (null: not held), read in one snapshot. */
  storedLengths(raws: Uint8Array[]): Array<number | null> {
    return this.db.transaction(() => raws.map((r) => (this.s.storedLength.get(r) as number | undefined) ?? null))();
  }

  /** The one stored digest starting with `prefix` (raw bytes), null if none, 'ambiguous' if several. */
  resolvePrefix(prefix: Buffer): Buffer | null | 'ambiguous' {
    const rows = (this.s.fromPrefix.all(prefix) as Buffer[]).filter((d) => d.subarray(0, prefix.byteLength).equals(prefix));
    if (rows.length === 0) return null;
    return rows.length === 1 ? rows[0]! : 'ambiguous';
  }

  /** Uncompressed length of a stored chunk, or null. */
  rawLength(digest: Digest): number | null {
    return (this.s.rawLength.get(rawOf(digest)) as number | undefined) ?? null;
  }

  has(digest: Digest): boolean {
    return this.hasRaw(rawOf(digest));
  }

  hasRaw(raw: Uint8Array): boolean {
    return this.bloom.mayHave(raw) && this.s.has.get(raw) !== undefined;
  }

  /** Records chunks (first writer wins) and refreshes times, in one transaction. */
  commit(added: Array<{ digest: Digest; loc: RecordLocation; rawLength: number }>, touched: Digest[], now: number): void {
    this.db.transaction(() => {
      for (const a of added) {
        const raw = rawOf(a.digest);
        this.s.insert.run(raw, this.packId(a.loc.pack), a.loc.offset, a.loc.length, a.rawLength, now);
        this.bloom.add(raw);
      }
      for (const d of touched) this.s.touch.run(now, rawOf(d));
    })();
    if (this.bloom.full()) this.bloom = this.buildBloom(added.length);
  }

  /** Entries of chunks given by raw digest (null: not held), read in one snapshot. */
  lookupRaw(raws: Uint8Array[]): Array<Omit<IndexedChunk, 'digest'> | null> {
    return this.db.transaction(() => raws.map((raw) => {
      if (!this.bloom.mayHave(raw)) return null;
      const r = this.s.get.get(raw) as { pack: number; offset: number; length: number; rawLength: number; mtimeMs: number } | undefined;
      return r ? { ...r, pack: this.packNames.get(r.pack)! } : null;
    }))();
  }

  /**
   * commit() by raw digest, for the chunk catalog: a chunk already recorded
   * keeps its place and has its time refreshed. Answers the positions in
   * `touched` that are not held.
   */
  commitRaw(added: Array<{ raw: Uint8Array; pack: string; offset: number; length: number; rawLength: number }>, touched: Uint8Array[], now: number): number[] {
    const absent: number[] = [];
    this.db.transaction(() => {
      for (const a of added) {
        if (this.s.insert.run(a.raw, this.packId(a.pack), a.offset, a.length, a.rawLength, now).changes === 0) this.s.touch.run(now, a.raw);
        this.bloom.add(a.raw);
      }
      touched.forEach((raw, i) => {
        if (this.s.touch.run(now, raw).changes === 0) absent.push(i);
      });
    })();
    if (this.bloom.full()) this.bloom = this.buildBloom(added.length);
    return absent;
  }

  /** Up to `limit` rows after digest `after` (raw; empty for the first page), by digest. */
  page(after: Uint8Array, limit: number): Array<{ raw: Buffer } & Omit<IndexedChunk, 'digest'>> {
    return (this.s.page.all(after, limit) as Array<{ digest: Buffer; pack: number; offset: number; length: number; rawLength: number; mtimeMs: number }>)
      .map(({ digest, pack, ...r }) => ({ raw: digest, pack: this.packNames.get(pack)!, ...r }));
  }

  /** Up to `limit` rows after digest `after` last added before `cutoffMs`: raw digest and stored length. */
  olderPage(after: Uint8Array, cutoffMs: number, limit: number): Array<[Buffer, number]> {
    return this.s.olderPage.all(after, cutoffMs, limit) as Array<[Buffer, number]>;
  }

  /** Deletes those of `raws` still last added before `cutoffMs` (one transaction); answers what went. */
  removeOlder(raws: Uint8Array[], cutoffMs: number): { chunks: number; stored: number } {
    return this.db.transaction(() => {
      let chunks = 0;
      let stored = 0;
      for (const raw of raws) {
        const length = this.s.removeOlderLength.get(raw, cutoffMs) as number | undefined;
        if (length !== undefined) {
          chunks++;
          stored += length;
        }
      }
      return { chunks, stored };
    })();
  }

  remove(digest: Digest): void {
    this.s.remove.run(rawOf(digest));
  }

  /**
   * GC's delete step, synchronous: every chunk last added before `cutoffMs`
   * that `keep` does not claim is deleted (one transaction, unless dryRun).
   */
  sweep(cutoffMs: number, keep: (digest: Digest) => boolean, dryRun: boolean): { chunks: number; stored: number; digests: Digest[] } {
    const victims: Array<{ raw: Buffer; digest: Digest }> = [];
    let stored = 0;
    for (const [raw, , length] of this.s.older.iterate(cutoffMs) as Iterable<[Buffer, number, number]>) {
      const digest = digestFromRaw(raw);
      if (keep(digest)) continue;
      victims.push({ raw, digest });
      stored += length;
    }
    if (!dryRun) {
      this.db.transaction(() => {
        for (const v of victims) this.s.removeOlder.run(v.raw, cutoffMs);
      })();
    }
    return { chunks: victims.length, stored, digests: victims.map((v) => v.digest) };
  }

  /** Live records per pack (stored bytes without record headers). */
  packLive(): Map<string, { chunks: number; stored: number }> {
    const out = new Map<string, { chunks: number; stored: number }>();
    for (const r of this.s.packLive.all() as Array<{ pack: number; chunks: number; stored: number }>) {
      out.set(this.packNames.get(r.pack)!, { chunks: r.chunks, stored: r.stored });
    }
    return out;
  }

  /** The records of a pack that the index points at. */
  inPack(pack: string): Array<{ digest: Digest; loc: RecordLocation }> {
    const id = this.packIds.get(pack);
    if (id === undefined) return [];
    return (this.s.inPack.all(id) as Array<[Buffer, number, number]>).map(([raw, offset, length]) => ({ digest: digestFromRaw(raw), loc: { pack, offset, length } }));
  }

  /** Points rows at their records' new places, only where they still point at the old ones (one transaction). */
  move(moves: Array<{ digest: Digest; from: RecordLocation; to: RecordLocation }>): number {
    let n = 0;
    this.db.transaction(() => {
      for (const m of moves) n += this.s.move.run(this.packId(m.to.pack), m.to.offset, rawOf(m.digest), this.packId(m.from.pack), m.from.offset).changes;
    })();
    return n;
  }

  *all(): Generator<IndexedChunk> {
    for (const r of this.s.all.iterate() as Iterable<{ digest: Buffer; pack: number; offset: number; length: number; rawLength: number; mtimeMs: number }>) {
      yield { digest: digestFromRaw(r.digest), pack: this.packNames.get(r.pack)!, offset: r.offset, length: r.length, rawLength: r.rawLength, mtimeMs: r.mtimeMs };
    }
  }

  stats(): { chunks: number; stored: number; raw: number } {
    return this.s.stats.get() as { chunks: number; stored: number; raw: number };
  }

  close(): void {
    this.db.close();
  }
}

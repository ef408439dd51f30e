import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import Database from 'better-sqlite3';
import { PackIndex } from '../storage/chunks/pack-index.js';
import { digestFromRaw, type Digest } from '../storage/digest.js';

/** What stats() used to compute: a sum over every row. */
function scan(path: string): { chunks: number; stored: number; raw: number } {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare('SELECT COUNT(*) AS chunks, COALESCE(SUM(length), 0) AS stored, COALESCE(SUM(raw_length), 0) AS raw FROM chunks').get() as { chunks: number; stored: number; raw: number };
  } finally {
    db.close();
  }
}

const digestOf = (i: number): Digest => digestFromRaw(createHash('sha256').update(String(i)).digest());

describe('chunk index running totals', () => {
  it('stats() equals a full scan through inserts, repeats, touches, moves, removals and a sweep', () => {
    const dir = mkdtempSync(join(tmpdir(), 'snapyard-totals-'));
    const path = join(dir, 'index.db');
    try {
      const ix = new PackIndex(path);
      expect(ix.stats()).toEqual({ chunks: 0, stored: 0, raw: 0 });
      const added = Array.from({ length: 500 }, (_, i) => ({ digest: digestOf(i), loc: { pack: `p${i % 3}`, offset: i * 100, length: 50 + i }, rawLength: 1000 + i }));
      ix.commit(added, [], 1000);
      // Already held: INSERT OR IGNORE adds nothing, and must not count twice.
      ix.commit(added.slice(0, 100), added.slice(0, 100).map((a) => a.digest), 2000);
      expect(ix.stats()).toEqual(scan(path));
      expect(ix.stats().chunks).toBe(500);
      ix.move([{ digest: added[1]!.digest, from: added[1]!.loc, to: { pack: 'p9', offset: 0, length: added[1]!.loc.length } }]);
      ix.remove(added[2]!.digest);
      ix.remove(added[2]!.digest); // gone already
      ix.sweep(1500, (d) => d !== added[200]!.digest && d !== added[201]!.digest, false); // 200 and 201 are old (not touched): swept
      expect(ix.stats()).toEqual(scan(path));
      expect(ix.stats().chunks).toBe(497);
      ix.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an index written before the totals existed gets them from its rows, and an older writer keeps them right', () => {
    const dir = mkdtempSync(join(tmpdir(), 'snapyard-totals-'));
    const path = join(dir, 'index.db');
    try {
      const ix = new PackIndex(path);
      ix.commit([0, 1, 2].map((i) => ({ digest: digestOf(i), loc: { pack: 'p0', offset: i * 10, length: 10 + i }, rawLength: 100 + i })), [], 1000);
      ix.close();
      // As an index of an earlier snapyard: no totals table, no triggers.
      const db = new Database(path);
      db.exec('DROP TRIGGER chunk_totals_insert; DROP TRIGGER chunk_totals_delete; DROP TRIGGER chunk_totals_update; DROP TABLE chunk_totals;');
      db.prepare('INSERT INTO chunks (digest, pack, offset, length, raw_length, mtime_ms) VALUES (?, 1, 40, 77, 700, 1000)').run(Buffer.from(digestOf(9).slice(7), 'hex'));
      db.close();
      const again = new PackIndex(path);
      expect(again.stats()).toEqual({ chunks: 4, stored: 10 + 11 + 12 + 77, raw: 100 + 101 + 102 + 700 });
      again.close();
      // A writer that knows nothing of the totals (the triggers do the counting).
      const old = new Database(path);
      old.prepare('DELETE FROM chunks WHERE digest = ?').run(Buffer.from(digestOf(0).slice(7), 'hex'));
      old.close();
      const third = new PackIndex(path);
      expect(third.stats()).toEqual(scan(path));
      expect(third.stats().chunks).toBe(3);
      third.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

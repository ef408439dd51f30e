/**
 * Resemblance sketches of stored chunks (storage/delta/resemblance.ts), kept so a
 * chunk is sketched once: SQLite beside the chunk index
 * (`<store>/sketches.db`, digest -> encoded sketch). A cache, not a truth:
 * losing it only costs recomputation.
 */
import { openSharedSqlite } from '../sqlite-open.js';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import type { ChunkStore } from '../chunks/chunk-store.js';
import { digestFromRaw, type Digest } from '../digest.js';
import { decodeSketch, encodeSketch, sketch } from './resemblance.js';

const BATCH_BYTES = 2 * 1024 * 1024;

export class SketchStore {
  private readonly db: Database.Database;
  private readonly s;

  constructor(root: string) {
    this.db = openSharedSqlite(join(root, 'sketches.db'));
    this.db.exec('CREATE TABLE IF NOT EXISTS sketches_v1 (digest BLOB PRIMARY KEY, sketch BLOB NOT NULL) WITHOUT ROWID');
    this.s = {
      get: this.db.prepare('SELECT sketch FROM sketches_v1 WHERE digest = ?').pluck(),
      put: this.db.prepare('INSERT OR REPLACE INTO sketches_v1 (digest, sketch) VALUES (?, ?)'),
    };
  }

  /**
   * Sketches of the given chunks (raw digest, length), computing and keeping
   * the ones not known yet: a LocalChunkStore reads and sketches them on its
   * worker threads (two batches at a time), any other store on this thread.
   */
  async sketches(chunks: ChunkStore & { sketchMany?: (d: Digest[], l: number[]) => Promise<Buffer[]> }, want: Array<{ raw: Buffer; length: number }>, lanes = 2): Promise<Uint32Array[]> {
    const out: Uint32Array[] = new Array(want.length);
    const todo: number[] = [];
    for (let i = 0; i < want.length; i++) {
      const b = this.s.get.get(want[i]!.raw) as Buffer | undefined;
      if (b) out[i] = decodeSketch(b);
      else todo.push(i);
    }
    const batches: number[][] = [];
    for (let k = 0; k < todo.length; ) {
      const batch: number[] = [];
      let bytes = 0;
      while (k < todo.length && (batch.length === 0 || bytes + want[todo[k]!]!.length <= BATCH_BYTES)) {
        bytes += want[todo[k]!]!.length;
        batch.push(todo[k++]!);
      }
      batches.push(batch);
    }
    const one = async (batch: number[]) => {
      const digests: Digest[] = batch.map((i) => digestFromRaw(want[i]!.raw));
      const lengths = batch.map((i) => want[i]!.length);
      let encoded: Buffer[];
      if (chunks.sketchMany) encoded = await chunks.sketchMany(digests, lengths);
      else {
        const data = await chunks.getConcat(digests, lengths);
        let at = 0;
        encoded = lengths.map((len) => encodeSketch(sketch(data.subarray(at, (at += len)))));
        chunks.release?.(data);
      }
      this.db.transaction(() => {
        batch.forEach((i, j) => {
          out[i] = decodeSketch(encoded[j]!);
          this.s.put.run(want[i]!.raw, encoded[j]!);
        });
      })();
    };
    const running = Array.from({ length: Math.min(lanes, batches.length) }, async () => {
      for (let b = batches.shift(); b; b = batches.shift()) await one(b);
    });
    await Promise.all(running);
    return out;
  }

  close(): void {
    this.db.close();
  }
}

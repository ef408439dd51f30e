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
import { TimeSlice } from '../time-slice.js';

const BATCH_BYTES = 2 * 1024 * 1024;

type SketchedChunks = ChunkStore & { sketchMany?: (d: Digest[], l: number[]) => Promise<Buffer[]> };

export class SketchStore {
  private readonly db: Database.Database;
  private readonly s;

  constructor(root: string) {
    this.db = openSharedSqlite(join(root, 'sketches.db'));
    this.db.exec('CREATE TABLE IF NOT EXISTS sketches_v1 (digest BLOB PRIMARY KEY, sketch BLOB NOT NULL) WITHOUT ROWID');
    this.s = {
      get: this.db.prepare('SELECT sketch FROM sketches_v1 WHERE digest = ?').pluck(),
      has: this.db.prepare('SELECT 1 FROM sketches_v1 WHERE digest = ?').pluck(),
      put: this.db.prepare('INSERT OR REPLACE INTO sketches_v1 (digest, sketch) VALUES (?, ?)'),
    };
  }

  /**
   * Sketches of the given chunks (raw digest, length), computing and keeping
   * the ones not known yet: a LocalChunkStore reads and sketches them on its
   * worker threads (two batches at a time), any other store on this thread.
   */
  async sketches(chunks: SketchedChunks, want: Array<{ raw: Buffer; length: number }>, lanes = 2): Promise<Uint32Array[]> {
    const out: Uint32Array[] = new Array(want.length);
    const todo: number[] = [];
    // A large set (a 1 GB image's 16k chunks) is looked up in slices, between which requests run.
    const slice = new TimeSlice();
    for (let i = 0; i < want.length; i++) {
      if ((i & 31) === 31) await slice.check();
      const b = this.s.get.get(want[i]!.raw) as Buffer | undefined;
      if (b) out[i] = decodeSketch(b);
      else todo.push(i);
    }
    await this.compute(chunks, want, todo, lanes, out);
    return out;
  }

  /**
   * Computes and keeps the sketches of the chunks that have none yet (after a
   * push: the next pull that holds them finds them ready). Known sketches are
   * only looked up, not read and decoded.
   */
  async warm(chunks: SketchedChunks, want: Array<{ raw: Buffer; length: number }>, lanes = 1): Promise<void> {
    const todo: number[] = [];
    const slice = new TimeSlice();
    for (let i = 0; i < want.length; i++) {
      if ((i & 31) === 31) await slice.check();
      if (this.s.has.get(want[i]!.raw) === undefined) todo.push(i);
    }
    await this.compute(chunks, want, todo, lanes, null);
  }

  /** Sketches chunks `todo` of `want` (batches of about 2 MiB, `lanes` at once), keeps them, and puts them in `out`. */
  private async compute(chunks: SketchedChunks, want: Array<{ raw: Buffer; length: number }>, todo: number[], lanes: number, out: Uint32Array[] | null): Promise<void> {
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
          if (out) out[i] = decodeSketch(encoded[j]!);
          this.s.put.run(want[i]!.raw, encoded[j]!);
        });
      })();
    };
    const running = Array.from({ length: Math.min(lanes, batches.length) }, async () => {
      for (let b = batches.shift(); b; b = batches.shift()) await one(b);
    });
    await Promise.all(running);
  }

  close(): void {
    this.db.close();
  }
}

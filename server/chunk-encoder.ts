/**
 * Turns a chunk the client lacks into a wire frame (storage/protocol/wire.ts). By
 * default the stored form as it is (no recompression). When the client holds
 * blobs (`have`), the chunk is compared with their chunks by resemblance
 * sketch (storage/delta/resemblance.ts); if some share content, the chunk is
 * compressed with the (up to 3) most similar as a zstd dictionary
 * (storage/delta/dict-codec.ts), and sent that way when it is smaller. Results are
 * cached per chunk and held set, so repeated pulls cost nothing.
 */
import type { BudgetCache } from '../storage/memory-budget.js';
import { distinctChunks, type BlobIndex } from '../storage/blobs/blob-index.js';
import { digestFromRaw, type Digest } from '../storage/digest.js';
import { isSnapyardError } from '../storage/errors.js';
import type { Store } from '../storage/open-store.js';
import { ResemblanceIndex } from '../storage/delta/resemblance.js';
import { SketchStore } from '../storage/delta/sketch-store.js';
import { TimeSlice } from '../storage/time-slice.js';
import { ENC_DICT, ENC_STORED, frameHeader } from '../storage/protocol/wire.js';

/** What the client holds, as the encoder needs it. */
export interface HaveContext {
  blobs: Digest[];
  key: string;
  table: ResemblanceIndex | null;
  /** Raw digests of the held chunks, by resemblance id. */
  ids: Buffer[];
  lengths: number[];
}

export interface Frame {
  header: Buffer;
  payload: Buffer;
  rawLength: number;
}

export interface EncoderOptions {
  /** zstd level for dictionary compression (default 6). */
  level?: number;
}

export class ChunkEncoder {
  private sketchStore: SketchStore | null = null;
  /** Held sets' resemblance tables being built (one build per set at a time). */
  private readonly building = new Map<string, Promise<HaveContext>>();
  /** Built tables (~17 MB for a 1 GB image's chunks), in the store's memory budget. */
  private readonly tables: BudgetCache<string, HaveContext>;
  /** Dictionary-compressed frames (stored ones are re-read, not cached), in the store's memory budget. */
  private readonly frames: BudgetCache<string, Frame>;
  /** Chunks (per held set) found best sent as stored: they are not sketched and compressed again. */
  private readonly asStored: BudgetCache<string, true>;
  private readonly level: number;

  constructor(
    private readonly store: Store,
    private readonly indexOf: (blob: Digest) => Promise<BlobIndex | null>,
    opts: EncoderOptions = {},
  ) {
    this.level = opts.level ?? 6;
    this.asStored = store.memory.cache('frames-as-stored', (_v: true, k: string) => k.length * 2 + 64);
    this.frames = store.memory.cache('frames', (f: Frame, k: string) => f.payload.byteLength + f.header.byteLength + k.length * 2 + 64);
    // One table may take up to half the budget: rebuilding one costs a read of every held sketch.
    this.tables = store.memory.cache('resemblance-tables', (h: HaveContext, k: string) => (h.table?.memoryBytes ?? 0) + h.ids.length * 120 + k.length * 2 + 64, {
      maxEntryBytes: store.memory.limitBytes / 2,
    });
  }

  private warming: Promise<void> = Promise.resolve();

  /**
   * Sketches a committed blob's chunks in the background (one blob at a time),
   * so the first pull that holds it finds its sketches ready. Failures only
   * mean the work is done later, on demand.
   */
  warm(blob: Digest, minSize = 1024 * 1024): void {
    this.warming = this.warming.then(async () => {
      const index = await this.indexOf(blob);
      if (!index || index.size < minSize) return;
      this.sketchStore ??= new SketchStore(this.store.chunks.sketchDir);
      const want = [...distinctChunks([index]).values()];
      await this.sketchStore.warm(this.store.chunks, want, 1); // one worker at a time: the other serves requests
    }).catch(() => {});
  }

  /** The held set's resemblance table (built once per set, from cached sketches). */
  prepare(have: Digest[]): Promise<HaveContext> {
    const key = [...new Set(have)].sort().join(',');
    const built = this.tables.get(key);
    if (built) return Promise.resolve(built);
    let p = this.building.get(key);
    if (!p) {
      p = this.build(have, key);
      this.building.set(key, p);
      p.then(
        (h) => this.tables.set(key, h),
        () => {},
      ).finally(() => this.building.delete(key));
    }
    return p;
  }

  private async build(have: Digest[], key: string): Promise<HaveContext> {
    const blobs: Digest[] = [];
    const indexes: BlobIndex[] = [];
    for (const d of have) {
      const index = await this.indexOf(d);
      if (!index) continue;
      blobs.push(d);
      indexes.push(index);
    }
    const want = [...distinctChunks(indexes).values()];
    if (want.length === 0) return { blobs, key, table: null, ids: [], lengths: [] };
    // The held chunks are the dictionaries of what gets encoded: a remote store locates them all now (a few catalog calls), not one by one later.
    await this.store.chunks.prepareReads?.(want.map((w) => digestFromRaw(w.raw)));
    this.sketchStore ??= new SketchStore(this.store.chunks.sketchDir);
    const sk = await this.sketchStore.sketches(this.store.chunks, want);
    const table = new ResemblanceIndex(sk.reduce((n, s) => n + s.length, 0));
    // In slices of the event loop: a 1 GB image's 16k sketches took 260 ms in one step.
    const slice = new TimeSlice();
    for (let id = 0; id < sk.length; id++) {
      if ((id & 31) === 31) await slice.check();
      table.add(id, sk[id]!);
    }
    table.trim();
    return { blobs, key, table, ids: want.map((w) => w.raw), lengths: want.map((w) => w.length) };
  }

  async encode(raw32: Buffer, have: HaveContext): Promise<Frame> {
    const cacheKey = `${raw32.toString('hex')}/${have.key}`;
    const hit = this.frames.get(cacheKey);
    if (hit) return hit;
    const digest: Digest = digestFromRaw(raw32);
    const stored = await this.store.chunks.getStored(digest);
    const rawLength = stored.readUInt32LE(8);
    let frame: Frame = { header: frameHeader(raw32, ENC_STORED, [], stored.byteLength), payload: stored, rawLength };
    // Decided before for this held set: sent as stored (no sketch, no dictionary compression again).
    if (this.asStored.has(cacheKey)) return frame;
    if (have.table) {
      // The chunk's sketch from the sketch store (warmed at commit), else computed on the chunk workers;
      // reading and compressing run there too: the event loop only looks up the table.
      const chunks = this.store.chunks;
      this.sketchStore ??= new SketchStore(chunks.sketchDir);
      const [sk] = await this.sketchStore.sketches(chunks, [{ raw: raw32, length: rawLength }], 1);
      const similar = have.table.similar(sk!, 3, 1);
      if (similar.length > 0) {
        const digests = [digest, ...similar.map((id) => digestFromRaw(have.ids[id]!))];
        // A held chunk gc has collected since the table was built: send the chunk as stored.
        const payload = await chunks.compressWithDictOf(digests, [rawLength, ...similar.map((id) => have.lengths[id]!)], this.level).catch((e: unknown) => {
          if (isSnapyardError(e, 'CHUNK_MISSING')) return null;
          throw e;
        });
        if (!payload) return frame;
        if (payload.byteLength + 32 * similar.length < stored.byteLength) {
          const ids = similar.map((id) => have.ids[id]!);
          frame = { header: frameHeader(raw32, ENC_DICT, ids, payload.byteLength), payload, rawLength };
        }
      }
    }
    if (frame.header[32] === ENC_DICT) this.frames.set(cacheKey, frame);
    else this.asStored.set(cacheKey, true);
    return frame;
  }

  close(): void {
    this.sketchStore?.close();
    this.sketchStore = null;
  }
}

import { closeSync, mkdirSync, openSync, readdirSync, readSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Digest } from '../digest.js';
import { compressWithDict } from '../delta/dict-codec.js';
import { encodeSketch, sketch } from '../delta/resemblance.js';
import { packPath, RECORD_HEADER_SIZE, type RecordLocation } from './pack-files.js';
import type { ChunkStoreStats, CompactOptions, CompactReport, MaintainedChunkStore, VerifyChunksReport } from './maintained-chunk-store.js';
import { compactPacks } from './pack-compactor.js';
import { verifyPacks } from './local-verify.js';
import { LocalChunkCore } from './local-chunk-core.js';

export { DEFAULT_LEVEL, type LocalChunkStoreOptions } from './local-chunk-core.js';

/**
 * The local chunk store as the registry maintains it: gc's mark and sweep
 * (with its write barrier), pack compaction (pack-compactor.ts), verify and
 * quarantine (local-verify.ts), stats. Reads and writes: local-chunk-core.ts.
 */
export class LocalChunkStore extends LocalChunkCore implements MaintainedChunkStore {
  // ---- delta encoding (server/chunk-encoder.ts) ----

  /** Encoded resemblance sketches (resemblance.ts) of stored chunks, computed on a worker. */
  async sketchMany(digests: Digest[], lengths: number[]): Promise<Buffer[]> {
    if (!this.pool) {
      const data = await this.getConcat(digests, lengths);
      let at = 0;
      return lengths.map((len) => encodeSketch(sketch(data.subarray(at, (at += len)))));
    }
    const pool = this.pool;
    const r = await this.retryMoved(digests, async (locs) => (await pool.run({ op: 'sketchMany', digests, locs, lengths })) as { sketches: Uint8Array[] });
    return r.sketches.map((u) => Buffer.from(u.buffer, u.byteOffset, u.byteLength));
  }

  /**
   * The first chunk zstd-compressed with the others, end to end, as its
   * dictionary (dict-codec.ts), on a worker thread: reading, decompressing and
   * compressing stay off the event loop.
   */
  async compressWithDictOf(digests: Digest[], lengths: number[], level: number): Promise<Buffer> {
    if (!this.pool) {
      const data = await this.getConcat(digests, lengths);
      return compressWithDict(data.subarray(0, lengths[0]!), data.subarray(lengths[0]!), level);
    }
    const pool = this.pool;
    const r = await this.retryMoved(digests, async (locs) => (await pool.run({ op: 'dictCompress', digests, locs, lengths, level })) as { data: Uint8Array });
    return Buffer.from(r.data.buffer, r.data.byteOffset, r.data.byteLength);
  }

  // ---- garbage collection, compaction, verify (storage/maintenance/gc.ts, pack-compactor.ts, verify.ts) ----

  beginMark(): void {
    this.seen = new Set();
  }

  endMark(): void {
    this.seen = null;
  }

  /**
   * GC's delete step (one synchronous pass, so nothing interleaves): removes the index
   * rows of chunks last added before `cutoffMs` that `keep` does not claim,
   * that no writer is storing and that no writer found during the mark.
   */
  async sweep(cutoffMs: number, keep: (digest: Digest) => boolean, dryRun: boolean): Promise<{ chunks: number; storedBytes: number; digests: Digest[] }> {
    return this.sweepNow(cutoffMs, keep, dryRun);
  }

  /** sweep, synchronously (the client cache's eviction runs it inside its state lock). */
  sweepNow(cutoffMs: number, keep: (digest: Digest) => boolean, dryRun: boolean): { chunks: number; storedBytes: number; digests: Digest[] } {
    const r = this.index.sweep(cutoffMs, (d) => keep(d) || this.pending.has(d) || this.seen?.has(d) === true, dryRun);
    return { chunks: r.chunks, storedBytes: r.stored + r.chunks * RECORD_HEADER_SIZE, digests: r.digests };
  }

  /** Closes every writer's current pack and commits every written chunk's row: packs listed before this are immutable after it. */
  async sealPacks(): Promise<void> {
    if (this.pool) await this.pool.broadcast({ op: 'seal' });
    else await this.inlineWriter!.seal();
    await this.flush();
  }

  /** Pack names on disk. */
  packNames(): string[] {
    return readdirSync(join(this.root, 'packs')).filter((f) => f.endsWith('.pack')).map((f) => f.slice(0, -'.pack'.length));
  }

  packSize(pack: string): number {
    return statSync(packPath(this.root, pack)).size;
  }

  packLive(): Map<string, { chunks: number; storedBytes: number }> {
    const out = new Map<string, { chunks: number; storedBytes: number }>();
    for (const [k, v] of this.index.packLive()) out.set(k, { chunks: v.chunks, storedBytes: v.stored + v.chunks * RECORD_HEADER_SIZE });
    return out;
  }

  /**
   * Rewrites the live records of a sealed pack into a worker's current pack
   * (fsync'ed), moves their index rows in one transaction, then deletes the
   * old pack. Readers that located a chunk in the old pack before the move
   * either still read it through an open descriptor or retry (retryMoved).
   */
  async rewritePack(pack: string): Promise<{ moved: number; freedBytes: number }> {
    const size = this.packSize(pack);
    const live = this.index.inPack(pack);
    const moves: Array<{ digest: Digest; from: RecordLocation; to: RecordLocation }> = [];
    let keptBytes = 0;
    for (let i = 0; i < live.length; ) {
      const batch: typeof live = [];
      let bytes = 0;
      while (i < live.length && (batch.length === 0 || bytes + live[i]!.loc.length <= 4 * 1024 * 1024)) {
        bytes += live[i]!.loc.length + RECORD_HEADER_SIZE;
        batch.push(live[i++]!);
      }
      const digests = batch.map((b) => b.digest);
      const from = batch.map((b) => b.loc);
      let to: RecordLocation[];
      if (this.pool) to = ((await this.pool.run({ op: 'copyRecords', digests, locs: from })) as { locs: RecordLocation[] }).locs;
      else {
        to = batch.map((b) => this.inlineWriter!.append(b.digest, Buffer.from(this.reader.readStored(b.digest, b.loc))));
        await this.inlineWriter!.sync();
      }
      batch.forEach((b, j) => moves.push({ digest: b.digest, from: b.loc, to: to[j]! }));
      keptBytes += bytes;
    }
    await this.flush(); // rows of chunks added meanwhile (their records are elsewhere)
    this.index.move(moves);
    this.movedPacks.add(pack);
    // Any row still naming this pack (none expected: sealed, flushed, all moved) keeps it.
    if (this.index.inPack(pack).length > 0) return { moved: moves.length, freedBytes: 0 };
    unlinkSync(packPath(this.root, pack));
    this.reader.drop(pack);
    if (this.pool) await this.pool.broadcast({ op: 'drop', pack });
    return { moved: moves.length, freedBytes: size - keptBytes };
  }

  /** Every committed chunk, in pack order (verify reads packs sequentially). */
  committed(): Array<{ digest: Digest; loc: RecordLocation }> {
    const out: Array<{ digest: Digest; loc: RecordLocation }> = [];
    for (const c of this.index.all()) out.push({ digest: c.digest, loc: { pack: c.pack, offset: c.offset, length: c.length } });
    out.sort((a, b) => (a.loc.pack < b.loc.pack ? -1 : a.loc.pack > b.loc.pack ? 1 : a.loc.offset - b.loc.offset));
    return out;
  }

  /** Reads, decompresses and re-hashes chunks on the workers; answers the failures. */
  async verifyRecords(digests: Digest[], locs: RecordLocation[]): Promise<Array<{ digest: Digest; message: string }>> {
    let bad: Array<{ i: number; message: string }>;
    if (this.pool) bad = ((await this.pool.run({ op: 'verifyMany', digests, locs })) as { bad: Array<{ i: number; message: string }> }).bad;
    else {
      bad = [];
      digests.forEach((d, i) => {
        try {
          this.reader.readRaw(this.codec, d, locs[i]!, true);
        } catch (e) {
          bad.push({ i, message: (e as Error).message });
        }
      });
    }
    return bad.map((b) => ({ digest: digests[b.i]!, message: b.message }));
  }

  /**
   * Moves a chunk aside: its record's bytes (as they are, corrupt or not) are
   * copied to <root>/quarantine/<hex>.<pack>.<offset>.rec, then its index row
   * is deleted, so the store no longer claims it and the next push of a blob
   * that needs it writes it again.
   */
  async quarantine(digest: Digest): Promise<string | null> {
    const row = this.index.get(digest);
    if (!row) return null;
    const dir = join(this.root, 'quarantine');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${digest.slice(7)}.${row.pack}.${row.offset}.rec`);
    const buf = Buffer.alloc(RECORD_HEADER_SIZE + row.length);
    try {
      const fd = openSync(packPath(this.root, row.pack), 'r');
      try {
        readSync(fd, buf, 0, buf.byteLength, row.offset);
      } finally {
        closeSync(fd);
      }
    } catch {
      /* the pack is gone or short: keep what we have (zeros) */
    }
    writeFileSync(file, buf);
    this.index.remove(digest);
    return file;
  }

  /** Where sketches.db lives: the store's root. */
  get sketchDir(): string {
    return this.root;
  }

  compact(opts: CompactOptions): Promise<CompactReport> {
    return compactPacks(this, opts);
  }

  verifyChunks(opts: { lanes: number }): Promise<VerifyChunksReport> {
    return verifyPacks(this, opts);
  }

  /** Tasks queued on the chunk workers (0 without workers). */
  queueDepth(): number {
    return this.pool?.queued ?? 0;
  }

  /** Chunks, stored bytes (records) and raw bytes held (committed ones). */
  async stats(): Promise<ChunkStoreStats> {
    return this.statsNow();
  }

  /** stats, synchronously. */
  statsNow(): ChunkStoreStats {
    const s = this.index.stats();
    return { chunks: s.chunks, stored: s.stored + s.chunks * RECORD_HEADER_SIZE, raw: s.raw };
  }
}

/**
 * What the registry asks of a RemoteChunkStore beyond reads and writes
 * (MaintainedChunkStore): batched size and prefix lookups that feed gc's
 * write barrier, stats, gc's mark/sweep over the catalog, compaction of the
 * packs in the bucket, verify and quarantine, and the delta encoder's
 * sketches (computed on this thread from get(), as the local store does
 * without workers).
 *
 * Compaction (compact()): after a flush, the packs the driver lists are
 * weighed against the catalog's live rows. A pack with no live row is
 * deleted; one whose live share is below `minLive`, or (most unused first)
 * while the unused bytes exceed `maxUnused` of the live bytes, is rewritten:
 * its live records are read with ranged GETs, appended to a compaction
 * segment in the spool, the segment is put as a new pack, the catalog rows
 * still at the old place are moved (catalog.move), and then the old pack is
 * deleted, unless a row still names it. Packs this store is still putting,
 * and packs of other writers sealed less than `compactGraceMs` ago (their
 * rows may not be committed yet: put comes before commit), are left alone.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { digestFromRaw, hexOf, rawOf, type Digest } from '../digest.js';
import { isDiskFull, isSnapyardError } from '../errors.js';
import { hexKey } from './chunk-catalog.js';
import type { ChunkStoreStats, CompactOptions, CompactReport, MaintainedChunkStore, VerifyChunksReport } from './maintained-chunk-store.js';
import { RECORD_HEADER_SIZE } from './pack-files.js';
import { RemoteChunkStore, type RemoteChunkStoreOptions } from './remote-chunk-store.js';
import { CALL_BATCH } from './remote-chunk-base.js';
import { packNameParts, Segments, storedRecords } from './remote-chunk-spool.js';
import { verifyRemote } from './remote-chunk-verify.js';

export interface MaintainedRemoteChunkStoreOptions extends RemoteChunkStoreOptions {
  /** A local directory for the delta encoder's sketches.db (default: beside the spool directory). */
  sketchDir?: string;
  /** Packs of other writers sealed less than this long ago are not compacted (default 15 minutes). */
  compactGraceMs?: number;
}

/** Digests per catalog call. */
/** Bytes of live records read from an old pack per round of compaction. */
const COPY_BYTES = 8 * 1024 * 1024;

export class MaintainedRemoteChunkStore extends RemoteChunkStore implements MaintainedChunkStore {
  readonly sketchDir: string;
  private readonly spoolDir: string;
  private readonly compactGraceMs: number;
  /** gc's write barrier: chunks a lookup found held while a mark runs (kept by the sweep). */
  private seen: Set<string> | null = null;

  constructor(opts: MaintainedRemoteChunkStoreOptions) {
    super(opts);
    this.spoolDir = opts.spoolDir;
    this.sketchDir = opts.sketchDir ?? join(dirname(opts.spoolDir), 'sketches');
    mkdirSync(this.sketchDir, { recursive: true });
    this.compactGraceMs = opts.compactGraceMs ?? 15 * 60_000;
  }

  async flushIfRoom(): Promise<void> {
    try {
      await this.flush();
    } catch (e) {
      if (!isDiskFull(e)) throw e;
    }
  }

  queueDepth(): number {
    return 0;
  }

  /** Catalog entries of `raws`, one lookup per 4096; found ones are remembered by the write barrier while a mark runs. */
  private async lookupSeen(raws: Uint8Array[]) {
    const out = [];
    for (let i = 0; i < raws.length; i += CALL_BATCH) {
      const part = raws.slice(i, i + CALL_BATCH);
      const entries = await this.catalog.lookup(part);
      entries.forEach((e, k) => {
        if (e != null) this.seen?.add(hexKey(part[k]!));
      });
      out.push(...entries);
    }
    return out;
  }

  async storedLengths(raws: Uint8Array[]): Promise<Array<number | null>> {
    return (await this.lookupSeen(raws)).map((e) => (e == null ? null : e.length + RECORD_HEADER_SIZE));
  }

  async rawLengths(raws: Uint8Array[], opts: { touch?: boolean } = {}): Promise<Array<number | null>> {
    const out = (await this.lookupSeen(raws)).map((e) => (e == null ? null : e.rawLength));
    if (opts.touch) await this.touchFound(raws, out);
    return out;
  }

  /**
   * Refreshes the catalog time of the chunks found (`found[i]` not null), so
   * gc's grace keeps them for the push that was told they are held, whichever
   * replica runs the gc (pins are this process's only). One commit per
   * CALL_BATCH; a chunk a sweep removed meanwhile is answered null.
   */
  private async touchFound<T>(raws: Uint8Array[], found: Array<T | null>): Promise<void> {
    const at: number[] = [];
    found.forEach((f, i) => {
      if (f !== null && f !== 'ambiguous') at.push(i);
    });
    for (let i = 0; i < at.length; i += CALL_BATCH) {
      const part = at.slice(i, i + CALL_BATCH);
      const { absent } = await this.catalog.commit([], part.map((j) => raws[j]!), this.now());
      for (const k of absent) found[part[k]!] = null;
    }
  }

  async resolvePrefixes(prefixes: Uint8Array[], opts: { touch?: boolean } = {}): Promise<Array<Buffer | null | 'ambiguous'>> {
    const hits = await this.resolveEach(prefixes);
    if (opts.touch) {
      const raws = hits.map((h) => (h instanceof Buffer ? h : new Uint8Array(32)));
      await this.touchFound(raws, hits);
    }
    return hits;
  }

  /** Prefixes resolved in the catalog, CALL_BATCH per call (one round trip each). */
  private async resolveEach(prefixes: Uint8Array[]): Promise<Array<Buffer | null | 'ambiguous'>> {
    const out: Array<Buffer | null | 'ambiguous'> = [];
    for (let i = 0; i < prefixes.length; i += CALL_BATCH) {
      for (const hit of await this.catalog.resolvePrefixes(prefixes.slice(i, i + CALL_BATCH))) {
        if (hit === null || hit === 'ambiguous') out.push(hit);
        else {
          this.seen?.add(hexKey(hit));
          out.push(Buffer.from(hit.buffer, hit.byteOffset, hit.byteLength));
        }
      }
    }
    return out;
  }

  async stats(): Promise<ChunkStoreStats> {
    const s = await this.catalog.stats();
    return { chunks: s.chunks, stored: s.storedBytes + s.chunks * RECORD_HEADER_SIZE, raw: s.rawBytes };
  }

  // ---- gc ----

  beginMark(): void {
    this.seen = new Set();
  }

  endMark(): void {
    this.seen = null;
  }

  /** Deletes the rows last touched before `cutoffMs` that `keep` rejects, unless this process is writing or reusing them or a lookup found them during the mark. */
  async sweep(cutoffMs: number, keep: (digest: Digest) => boolean, dryRun: boolean): Promise<{ chunks: number; storedBytes: number }> {
    const r = await this.catalog.sweep(
      cutoffMs,
      (raw) => {
        const key = hexKey(raw);
        if (this.seen?.has(key) || this.touched.has(key)) return true;
        const d = digestFromRaw(raw);
        return this.pending.has(d) || keep(d);
      },
      dryRun,
    );
    return { chunks: r.chunks, storedBytes: r.storedBytes + r.chunks * RECORD_HEADER_SIZE };
  }

  async compact(opts: CompactOptions): Promise<CompactReport> {
    await this.flush();
    const listed: Array<{ name: string; size: number }> = [];
    for await (const p of this.driver.list()) listed.push(p);
    // Segments being put or committed now (taken before packLive: one committed after this is counted live below).
    const inFlight = new Set(this.segments.sealed.map((s) => s.name));
    const live = await this.catalog.packLive();
    const now = this.now();
    const packs: Array<{ pack: string; size: number; live: number }> = [];
    for (const { name, size } of listed) {
      if (inFlight.has(name)) continue;
      const parts = packNameParts(name);
      const ours = parts?.writerId === this.spool.writerId;
      if (!ours && (parts === null || parts.timeMs > now - this.compactGraceMs)) continue;
      const l = live.get(name);
      packs.push({ pack: name, size, live: l ? l.storedBytes + l.chunks * RECORD_HEADER_SIZE : 0 });
    }
    packs.sort((a, b) => Number(a.live > 0) - Number(b.live > 0) || b.size - b.live - (a.size - a.live));
    const liveTotal = packs.reduce((n, p) => n + p.live, 0);
    let unused = packs.reduce((n, p) => n + Math.max(0, p.size - p.live), 0);
    const chosen: typeof packs = [];
    for (const p of packs) {
      if (p.live > 0 && p.live >= p.size * opts.minLive && unused <= liveTotal * opts.maxUnused) continue;
      if (p.live >= p.size) continue;
      unused -= Math.max(0, p.size - p.live);
      chosen.push(p);
    }
    return this.rewrite(chosen, opts.fence ?? (async () => {}));
  }

  /** Copies the live records of `packs` into new packs, moves their rows, deletes the old packs that no row names any more. */
  private async rewrite(packs: Array<{ pack: string; size: number }>, fence: () => Promise<void>): Promise<CompactReport> {
    const segs = new Segments(this.spool, this.segmentBytes);
    const moved = new Map<string, Array<{ raw: Uint8Array; from: { pack: string; offset: number }; toOffset: number }>>();
    let written = 0;
    const putSealed = async () => {
      while (segs.sealed.length > 0) {
        const seg = await segs.putOldest(this.driver);
        const moves = moved.get(seg.path) ?? [];
        await fence();
        for (let i = 0; i < moves.length; i += CALL_BATCH) {
          await this.catalog.move(moves.slice(i, i + CALL_BATCH).map((m) => ({ raw: m.raw, from: m.from, to: { pack: seg.name, offset: m.toOffset } })));
        }
        written += seg.size;
        segs.sealed.shift();
        seg.remove();
      }
    };
    try {
      for (const { pack } of packs) {
        const rows = await this.catalog.inPack(pack);
        for (let i = 0; i < rows.length; ) {
          const batch: typeof rows = [];
          let bytes = 0;
          while (i < rows.length && (batch.length === 0 || bytes + rows[i]!.length <= COPY_BYTES)) {
            bytes += rows[i]!.length + RECORD_HEADER_SIZE;
            batch.push(rows[i++]!);
          }
          const digests = batch.map((r) => digestFromRaw(r.raw));
          let stored: Buffer[];
          try {
            stored = await this.reader.fetch(digests, batch.map((r) => ({ pack, offset: r.offset, length: r.length })), { keep: false });
          } catch (e) {
            if (isSnapyardError(e, 'NOT_FOUND')) break; // gone already (another compaction)
            throw e;
          }
          const items = batch.map((r, k) => ({ digest: digests[k]!, raw32: Buffer.from(r.raw), rawLength: 0, stored: stored[k]! }));
          segs.append(items, storedRecords(items), (k, seg, offset) => {
            const list = moved.get(seg.path) ?? [];
            list.push({ raw: batch[k]!.raw, from: { pack, offset: batch[k]!.offset }, toOffset: offset });
            moved.set(seg.path, list);
          });
          await segs.drain();
          await putSealed();
        }
      }
      segs.sealOpen();
      await putSealed();
    } finally {
      segs.discard();
    }
    let rewritten = 0;
    let deleted = 0;
    let freed = 0;
    for (const { pack, size } of packs) {
      if ((await this.catalog.inPack(pack)).length > 0) continue; // a row still names it (moved meanwhile or not copied): keep it
      await fence();
      await this.driver.delete([pack]);
      freed += size;
      const hadLive = [...moved.values()].some((l) => l.some((m) => m.from.pack === pack));
      if (hadLive) rewritten++;
      else deleted++;
    }
    return { rewritten, deleted, freedBytes: Math.max(0, freed - written) };
  }

  // ---- verify ----

  verifyChunks(opts: { lanes: number }): Promise<VerifyChunksReport> {
    return verifyRemote(this.bucket, this.catalog, (stored, digests, rawLengths) => this.codecs.decodeConcat(stored, digests, rawLengths, true), opts);
  }

  /** Copies the chunk's record (as it is) to <spoolDir>/../quarantine/<hex>.<pack>.<offset>.rec, then removes its row. */
  async quarantine(digest: Digest): Promise<string | null> {
    await this.flush();
    const [row] = await this.catalog.lookup([rawOf(digest)]);
    if (row == null) return null;
    const dir = join(dirname(this.spoolDir), 'quarantine');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${hexOf(digest)}.${row.pack}.${row.offset}.rec`);
    let buf: Buffer;
    try {
      buf = await this.driver.get(row.pack, row.offset, RECORD_HEADER_SIZE + row.length);
    } catch (e) {
      if (!isSnapyardError(e, 'NOT_FOUND') && !isSnapyardError(e, 'RANGE_INVALID')) throw e;
      buf = Buffer.alloc(RECORD_HEADER_SIZE + row.length); // the pack is gone or short: zeros
    }
    writeFileSync(file, buf);
    this.forget(digest);
    await this.catalog.remove([rawOf(digest)]);
    return file;
  }

  // ---- delta encoding ----

  /** Resemblance sketches of stored chunks, read and verified, computed on the codec workers. */
  async sketchMany(digests: Digest[], lengths: number[]): Promise<Buffer[]> {
    // Each chunk is sketched once (the sketch is kept, not the chunk): nothing to keep in the read cache.
    return this.decoded(digests, (stored) => this.codecs.sketches(stored, digests, lengths), { keep: false });
  }

  /** The first chunk compressed with the others as its dictionary, on the codec workers. */
  async compressWithDictOf(digests: Digest[], lengths: number[], level: number): Promise<Buffer> {
    return this.decoded(digests, (stored) => this.codecs.dictCompress(stored, digests, lengths, level));
  }
}

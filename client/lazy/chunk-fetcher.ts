/**
 * Fetches the chunks a lazy mount lacks (client/fetch.ts does the batches:
 * one `_chunks` request per batch, every chunk verified against its digest,
 * stored in the node cache and flushed), with what a long-running mount
 * needs on top:
 *
 * - one fetch per chunk at a time: reads of a chunk already on its way wait
 *   for that fetch (the in-flight map) instead of asking again;
 * - a failure (the network, a server error, a broken response) is retried
 *   with backoff (100 ms doubling to 2 s) until the latest deadline of the
 *   reads waiting for it (a read joining a fetch extends it);
 * - a chunk that arrives corrupt (does not hash to its name) is asked again,
 *   at most `maxCorrupt` times per fetch, then the fetch fails;
 * - guest reads are counted while they wait (`foreground`), so the
 *   background prefetch steps aside for them;
 * - the node cache is flushed (its packs fsync'ed, their index rows
 *   committed) in the background after each fetch, one flush at a time,
 *   instead of before the read is answered: a guest read waits for the
 *   network and the checks, not for the disk. What is not flushed yet is
 *   read from the cache all the same; a kill -9 loses only the chunks of
 *   the flush under way (fetched again when read), and the cache stays
 *   consistent (its index never names bytes not on disk).
 */
import { isSnapyardError, SnapyardError } from '../../storage/errors.js';
import { fetchChunks, type FetchOptions, type Want } from '../fetch.js';

/** Where to fetch from and what is held (as for a pull's fetch: the base and the cache's snapshots, for encoding against). */
export interface ChunkFetcherOptions extends Pick<FetchOptions, 'registry' | 'repo' | 'blob' | 'have' | 'sources' | 'cache'> {
  /** Corrupt arrivals tolerated per fetch before it fails (default 4). */
  maxCorrupt?: number;
  /** Told of each failed attempt (it is retried while the deadline allows). */
  onRetry?: (e: unknown, attempt: number) => void;
  /** Told of a background flush that failed (a full disk): its chunks stay pending, and the next flush tries again. */
  onFlushError?: (e: unknown) => void;
}

export interface FetcherStats {
  /** Fetches that reached the network (one or more `_chunks` requests each). */
  fetches: number;
  chunks: number;
  rawBytes: number;
  wireBytes: number;
  /** Failed attempts that were retried. */
  retries: number;
  /** Attempts that failed because a chunk arrived corrupt. */
  corrupt: number;
  /** Background flushes of the node cache. */
  flushes: number;
}

const FIRST_DELAY_MS = 100;
const MAX_DELAY_MS = 2000;

export class ChunkFetcher {
  private readonly inflight = new Map<string, { done: Promise<void>; job: { deadline: number } }>();
  /** Guest reads waiting for chunks right now. */
  foreground = 0;
  readonly stats: FetcherStats = { fetches: 0, chunks: 0, rawBytes: 0, wireBytes: 0, retries: 0, corrupt: 0, flushes: 0 };
  private flushing: Promise<void> | null = null;
  private flushAgain = false;
  private closed = false;

  constructor(private readonly opts: ChunkFetcherOptions) {}

  /** True when the chunk is in the node cache or a local file. */
  async isLocal(hex: string): Promise<boolean> {
    return this.opts.sources.fileOf(hex) >= 0 || (await this.opts.sources.inCache(hex));
  }

  /**
   * Resolves once every chunk of `wants` is in the node cache: those not on
   * their way already are fetched together (one batch per 8 MiB), the
   * others awaited. Rejects when a fetch it waited for failed (the caller
   * may ask again while its own deadline allows).
   */
  async ensure(wants: Want[], deadline: number, foreground = true): Promise<void> {
    const waits = new Set<Promise<void>>();
    const mine: Want[] = [];
    const seen = new Set<string>();
    for (const w of wants) {
      if (seen.has(w.hex)) continue;
      seen.add(w.hex);
      const f = this.inflight.get(w.hex);
      if (f) {
        f.job.deadline = Math.max(f.job.deadline, deadline);
        waits.add(f.done);
      } else mine.push(w);
    }
    if (mine.length > 0) {
      const job = { deadline };
      const p = this.fetch(mine, job);
      const entry = { done: p, job };
      for (const w of mine) this.inflight.set(w.hex, entry);
      void p.catch(() => {}).finally(() => {
        for (const w of mine) if (this.inflight.get(w.hex) === entry) this.inflight.delete(w.hex);
      });
      waits.add(p);
    }
    if (foreground) this.foreground++;
    try {
      await Promise.all(waits);
    } finally {
      if (foreground) this.foreground--;
    }
  }

  /** Whether a fetch of this chunk is under way. */
  inFlight(hex: string): boolean {
    return this.inflight.has(hex);
  }

  /** Stops retrying: fetches under way fail at their next attempt. */
  close(): void {
    this.closed = true;
  }

  /** Resolves once no background flush is under way or asked for (what was fetched before the call is flushed, or its flush failed and was reported). */
  async flushed(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  /** One flush at a time; fetches that end during one ask for one more after it. */
  private flushSoon(): void {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = (async () => {
      do {
        this.flushAgain = false;
        this.stats.flushes++;
        try {
          await this.opts.cache.chunks.flush();
        } catch (e) {
          this.opts.onFlushError?.(e);
        }
      } while (this.flushAgain);
    })().finally(() => (this.flushing = null));
  }

  private async fetch(wants: Want[], job: { deadline: number }): Promise<void> {
    const o = this.opts;
    // A chunk another fetch stored between the caller's look and this one is not asked for again.
    let remaining = await this.notCached(wants);
    if (remaining.length === 0) return;
    let delay = FIRST_DELAY_MS;
    let corrupt = 0;
    this.stats.fetches++;
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new SnapyardError('CONNECTION_LOST', 'the mount is stopping');
      let failure: unknown = null;
      try {
        const got = await fetchChunks(remaining, { registry: o.registry, repo: o.repo, blob: o.blob, have: o.have, sources: o.sources, cache: o.cache, concurrency: 2, flush: false });
        this.stats.chunks += got.chunks;
        this.stats.rawBytes += got.rawBytes;
        this.stats.wireBytes += got.wireBytes;
      } catch (e) {
        failure = e;
      }
      this.flushSoon();
      // What arrived is in the cache even when the batch broke off: ask only for the rest.
      remaining = await this.notCached(remaining);
      if (remaining.length === 0) return;
      failure ??= new SnapyardError('CHUNK_MISSING', `the server did not send ${remaining.length} chunks`);
      if (isSnapyardError(failure, 'CHUNK_CORRUPT')) {
        this.stats.corrupt++;
        if (++corrupt > (o.maxCorrupt ?? 4)) throw failure;
      }
      this.stats.retries++;
      o.onRetry?.(failure, attempt);
      if (Date.now() + delay >= job.deadline) {
        const why = failure instanceof Error ? failure.message : String(failure);
        throw new SnapyardError(isSnapyardError(failure) ? failure.code : 'CONNECTION_LOST', `${remaining.length} chunks not fetched before the read deadline (${attempt} attempts): ${why}`);
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, MAX_DELAY_MS);
    }
  }

  private async notCached(wants: Want[]): Promise<Want[]> {
    const out: Want[] = [];
    for (const w of wants) if (!(await this.opts.sources.inCache(w.hex))) out.push(w);
    return out;
  }
}

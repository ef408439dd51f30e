/**
 * The background half of a lazy mount: streams the chunks of the guest view
 * the node lacks into the cache, in guest order, at a bounded rate, while
 * guest reads are served (a boot trace's chunks first, at full speed).
 * Guest reads come first: past the traced part, a batch starts only while
 * no guest read waits for the network, and a batch is small (at most 1 MiB,
 * or a quarter second at the rate), so a read that needs a chunk being
 * prefetched waits little. A failed batch is tried again later (backoff up
 * to 5 s); stopping it leaves what arrived in the cache.
 */
import { batchesOf, type Want } from '../fetch.js';
import type { ChunkFetcher } from './chunk-fetcher.js';

export interface PrefetchOptions {
  fetcher: ChunkFetcher;
  /** The chunks to have, in the order to fetch them. */
  wants: Want[];
  /** Bytes per second (raw chunk bytes); must be > 0 (Infinity: no bound). */
  rate: number;
  /** The first this many wants (a boot trace's) are fetched at full speed (3 batches of 2 MiB at once), before the rest. */
  unthrottled?: number;
  /** Called once those first wants are local. */
  onUnthrottledDone?: () => void;
  /** Called once every chunk is local. */
  onDone?: (s: { chunks: number; bytes: number; seconds: number }) => void;
  onError?: (e: unknown) => void;
}

const MAX_BATCH = 1024 * 1024;
const MIN_BATCH = 64 * 1024;
const BATCH_DEADLINE_MS = 30_000;
const TRACE_BATCH = 2 * 1024 * 1024;
const TRACE_PARALLEL = 3;

export class Prefetcher {
  private stopped = false;
  private wake: (() => void) | null = null;
  /** Resolves when every chunk is local (true) or the prefetch was stopped (false). */
  readonly done: Promise<boolean>;

  constructor(private readonly opts: PrefetchOptions) {
    this.done = this.run();
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }

  private async run(): Promise<boolean> {
    const { fetcher, rate } = this.opts;
    const t0 = performance.now();
    const batchBytes = Math.max(MIN_BATCH, Math.min(MAX_BATCH, Math.floor(rate / 4)));
    const fast = this.opts.unthrottled ?? 0;
    let fetchedBytes = fast > 0 ? await this.runTraced(fast) : 0;
    let next = fast;
    let backoff = 500;
    let notBefore = performance.now();
    const wants = this.opts.wants;
    while (!this.stopped) {
      // Guest reads first.
      if (fetcher.foreground > 0) {
        await this.sleep(20);
        continue;
      }
      const batch: Want[] = [];
      let bytes = 0;
      while (next < wants.length && bytes < batchBytes) {
        const w = wants[next]!;
        if (fetcher.inFlight(w.hex) || !(await fetcher.isLocal(w.hex))) {
          batch.push(w);
          bytes += w.length;
        }
        next++;
      }
      if (batch.length === 0) break;
      const wait = notBefore - performance.now();
      if (wait > 0) await this.sleep(wait);
      if (this.stopped) break;
      try {
        await fetcher.ensure(batch, Date.now() + BATCH_DEADLINE_MS, false);
        fetchedBytes += bytes;
        backoff = 500;
      } catch (e) {
        this.opts.onError?.(e);
        next -= countFrom(wants, next, batch); // ask for this batch again, later
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
      }
      notBefore = Math.max(notBefore, performance.now() - 1000) + (bytes / rate) * 1000;
    }
    if (this.stopped) return false;
    this.opts.onDone?.({ chunks: wants.length, bytes: fetchedBytes, seconds: (performance.now() - t0) / 1000 });
    return true;
  }

  /**
   * The traced head: what the guest is about to read, so it goes at full
   * speed, a few batches at once, beside the guest's own reads. A batch that
   * fails is left to the guest's reads (they fetch on demand).
   */
  private async runTraced(fast: number): Promise<number> {
    const { fetcher } = this.opts;
    const lacking: Want[] = [];
    for (const w of this.opts.wants.slice(0, fast)) if (!(await fetcher.isLocal(w.hex))) lacking.push(w);
    const batches = batchesOf(lacking, TRACE_BATCH);
    let bytes = 0;
    await Promise.all(Array.from({ length: Math.min(TRACE_PARALLEL, batches.length) }, async () => {
      for (let b = batches.shift(); b && !this.stopped; b = batches.shift()) {
        try {
          await fetcher.ensure(b, Date.now() + BATCH_DEADLINE_MS, false);
          bytes += b.reduce((n, w) => n + w.length, 0);
        } catch (e) {
          this.opts.onError?.(e);
        }
      }
    }));
    if (!this.stopped) this.opts.onUnthrottledDone?.();
    return bytes;
  }
}

/** How many entries back from `next` the batch's first chunk is. */
function countFrom(wants: Want[], next: number, batch: Want[]): number {
  const first = batch[0]!.hex;
  for (let i = next - 1; i >= 0; i--) if (wants[i]!.hex === first) return next - i;
  return 0;
}

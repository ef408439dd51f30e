import type { Digest } from '../digest.js';
import type { ChunkWriter } from '../chunks/chunk-store.js';

/**
 * Chunks that garbage collection must not delete, whatever its grace period:
 * the chunks an open upload or push session wrote or was told exist, until
 * the session commits, is cancelled or expires. Refcounted (several sessions
 * may pin one chunk). One registry per Store (open-store.ts), passed to whoever
 * pins; GC reads it in the same synchronous step that deletes index rows, and
 * writers pin a chunk in the same synchronous step that finds it held, so a
 * chunk is either pinned before the sweep looks or rewritten after it.
 */
export class ChunkPins {
  private readonly counts = new Map<Digest, number>();

  pin(digest: Digest): void {
    this.counts.set(digest, (this.counts.get(digest) ?? 0) + 1);
  }

  unpin(digest: Digest): void {
    const n = this.counts.get(digest);
    if (n === undefined) return;
    if (n <= 1) this.counts.delete(digest);
    else this.counts.set(digest, n - 1);
  }

  has(digest: Digest): boolean {
    return this.counts.has(digest);
  }

  /** Distinct pinned chunks. */
  get size(): number {
    return this.counts.size;
  }

  /** A set of pins owned by one session, released together. */
  lease(): PinLease {
    return new PinLease(this);
  }
}

/** The pins one session holds (each digest pinned once, however often it is added). */
export class PinLease {
  private readonly held = new Set<Digest>();
  private released = false;

  constructor(private readonly pins: ChunkPins) {}

  pin(digest: Digest): void {
    if (this.released || this.held.has(digest)) return;
    this.held.add(digest);
    this.pins.pin(digest);
  }

  get size(): number {
    return this.held.size;
  }

  /** Unpins everything (idempotent). */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const d of this.held) this.pins.unpin(d);
    this.held.clear();
  }
}

/** A writer whose chunks (new or found held) are pinned by `lease` as they are added. */
export function pinningWriter(w: ChunkWriter, lease: PinLease | undefined): ChunkWriter {
  if (!lease) return w;
  const addStored = w.addStored?.bind(w);
  return {
    add: async (raw) => {
      const r = await w.add(raw);
      lease.pin(r.digest);
      return r;
    },
    ...(addStored
      ? {
          addStored: async (...args: Parameters<typeof addStored>) => {
            const r = await addStored(...args);
            lease.pin(r.digest);
            return r;
          },
        }
      : {}),
    finish: () => w.finish(),
  };
}

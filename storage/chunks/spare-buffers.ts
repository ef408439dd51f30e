/**
 * Buffers reused from one read or codec task to the next (a task's input
 * sent to a worker and sent back, a decoded batch the caller hands back), so
 * a stream of tasks allocates nothing new and neither isolate piles up dead
 * transferred buffers between its garbage collections. A task holds the
 * smallest size that fits it: 64 KiB, 128 KiB, ... up to `largest` (the last
 * step is `largest` itself), not a whole batch's worth for a few small
 * chunks. At most `budget` bytes wait for reuse; the rest go to the GC.
 *
 * A buffer is known by its size alone: one that has crossed to a worker and
 * back is a new ArrayBuffer object over the same memory. So give() only what
 * nothing else uses any more.
 */
const SMALLEST = 64 * 1024;

/** The largest reused buffer the stores use: a 2 MiB read batch plus a largest chunk. */
export const BATCH_BUFFER_BYTES = 2 * 1024 * 1024 + 256 * 1024;

export class SpareBuffers {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private held = 0;

  constructor(
    readonly largest: number,
    private readonly budget: number,
  ) {}

  /** The size take(bytes) hands out; 0 above `largest` (not reused). */
  sizeFor(bytes: number): number {
    if (bytes > this.largest) return 0;
    let size = SMALLEST;
    while (size < bytes && size * 2 < this.largest) size *= 2;
    return size >= bytes ? size : this.largest;
  }

  /** A buffer of sizeFor(bytes) (a spare one when there is one); null above `largest`. */
  take(bytes: number): ArrayBuffer | null {
    const size = this.sizeFor(bytes);
    if (size === 0) return null;
    const ab = this.free.get(size)?.pop();
    if (ab) this.held -= size;
    return ab ?? new ArrayBuffer(size);
  }

  /** Takes back a buffer of one of the sizes (anything else is ignored) that nothing uses any more. */
  give(ab: ArrayBufferLike): void {
    if (!(ab instanceof ArrayBuffer) || this.sizeFor(ab.byteLength) !== ab.byteLength || this.held + ab.byteLength > this.budget) return;
    const list = this.free.get(ab.byteLength) ?? [];
    if (list.includes(ab)) return;
    list.push(ab);
    this.free.set(ab.byteLength, list);
    this.held += ab.byteLength;
  }
}

/**
 * Reply buffers of a lazy export, reused: a read's bytes go out on the NBD
 * socket and come back here once written (BlockSource.release), so reading
 * a snapshot from the cache allocates (and collects) almost nothing per read.
 * Buffers come in power-of-two sizes from 64 KiB (or, with `granule`, in
 * multiples of it: recent chunks' copies, cached-chunks.ts); at most `budget`
 * bytes of them wait for reuse (more are dropped to the garbage collector).
 */
const SMALLEST = 64 * 1024;

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private readonly mine = new WeakSet<ArrayBuffer>();
  private held = 0;

  constructor(
    readonly budget: number,
    private readonly granule?: number,
  ) {}

  /** The size of the buffer take(length) hands out. */
  sizeFor(length: number): number {
    if (this.granule) return Math.max(1, Math.ceil(length / this.granule)) * this.granule;
    let size = SMALLEST;
    while (size < length) size *= 2;
    return size;
  }

  /** Bytes waiting for reuse (never above the budget). */
  get bytes(): number {
    return this.held;
  }

  /** `length` bytes, uninitialised. */
  take(length: number): Buffer {
    const size = this.sizeFor(length);
    const ab = this.free.get(size)?.pop();
    if (ab) {
      this.held -= size;
      return Buffer.from(ab, 0, length);
    }
    const b = Buffer.allocUnsafeSlow(size);
    this.mine.add(b.buffer as ArrayBuffer);
    return b.subarray(0, length);
  }

  /** Hands back a buffer take() returned (anything else is ignored); the caller no longer uses it. */
  give(b: Buffer): void {
    const ab = b.buffer as ArrayBuffer;
    if (!this.mine.has(ab) || this.held + ab.byteLength > this.budget) return;
    const list = this.free.get(ab.byteLength) ?? [];
    if (list.includes(ab)) return;
    list.push(ab);
    this.free.set(ab.byteLength, list);
    this.held += ab.byteLength;
  }
}

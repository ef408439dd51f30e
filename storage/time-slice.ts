/**
 * Long loops on the event loop in slices: work runs until a slice (5 ms by
 * default) is used up, then yields one turn of the event loop (setImmediate)
 * so requests waiting meanwhile are served. A 1 GB image's 16k chunks looked
 * up, sketched into a table or checked in one synchronous step held every
 * other request for 100-260 ms (CPU profile under bench/load.ts).
 */
export class TimeSlice {
  private start = performance.now();

  constructor(private readonly ms = 5) {}

  /** True once this slice is used up (cheap: call it every item or every few). */
  due(): boolean {
    return performance.now() - this.start >= this.ms;
  }

  /** Yields one turn of the event loop and starts a new slice. */
  async pause(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.start = performance.now();
  }

  /** pause() when due(), else nothing. */
  async check(): Promise<void> {
    if (this.due()) await this.pause();
  }
}

/** `items.map(fn)`, in slices of the event loop. */
export async function mapSliced<T, U>(items: readonly T[], fn: (item: T, i: number) => U, ms?: number): Promise<U[]> {
  const slice = new TimeSlice(ms);
  const out: U[] = new Array(items.length);
  for (let i = 0; i < items.length; i++) {
    if ((i & 63) === 63) await slice.check();
    out[i] = fn(items[i]!, i);
  }
  return out;
}

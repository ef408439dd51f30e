/**
 * One memory budget for a process's caches (`serve --cache-memory`): blob
 * indexes, chunk sets, index differences, resemblance tables, dictionary-compressed frames, the
 * remote store's read cache. Each cache is a map whose entries carry an
 * estimated size; all of them share one least-recently-used order, so when
 * the total passes the budget the entry used longest ago goes, whichever
 * cache holds it. A busy cache grows at the expense of idle ones, and the
 * sum never passes the budget.
 */

interface Node {
  owner: BudgetCache<unknown, unknown>;
  key: unknown;
  value: unknown;
  bytes: number;
  prev: Node | null;
  next: Node | null;
}

export const DEFAULT_CACHE_MEMORY = 128 * 1024 * 1024;

export class MemoryBudget {
  private head: Node | null = null; // least recently used
  private tail: Node | null = null;
  private used = 0;
  private readonly caches: Array<BudgetCache<unknown, unknown>> = [];

  constructor(readonly limitBytes: number = DEFAULT_CACHE_MEMORY) {}

  /**
   * A cache in this budget. `sizeOf` estimates an entry's bytes; an entry
   * larger than `maxEntryBytes` (default an eighth of the budget) is not kept.
   */
  cache<K, V>(name: string, sizeOf: (value: V, key: K) => number, opts: { maxEntryBytes?: number } = {}): BudgetCache<K, V> {
    const c = new BudgetCache<K, V>(this, name, sizeOf, opts.maxEntryBytes ?? this.limitBytes / 8);
    this.caches.push(c as BudgetCache<unknown, unknown>);
    return c;
  }

  /** Bytes held by all caches. */
  get usedBytes(): number {
    return this.used;
  }

  /** Each cache's entries and bytes. */
  usage(): Array<{ name: string; entries: number; bytes: number }> {
    return this.caches.map((c) => ({ name: c.name, entries: c.size, bytes: c.bytes }));
  }

  /** @internal */
  link(n: Node): void {
    n.prev = this.tail;
    n.next = null;
    if (this.tail) this.tail.next = n;
    else this.head = n;
    this.tail = n;
    this.used += n.bytes;
    while (this.used > this.limitBytes && this.head && this.head !== n) this.head.owner.evict(this.head);
  }

  /** @internal */
  unlink(n: Node): void {
    if (n.prev) n.prev.next = n.next;
    else this.head = n.next;
    if (n.next) n.next.prev = n.prev;
    else this.tail = n.prev;
    n.prev = n.next = null;
    this.used -= n.bytes;
  }

  /** @internal Marks n used now. */
  touch(n: Node): void {
    if (this.tail === n) return;
    this.unlink(n);
    this.link(n);
  }
}

export class BudgetCache<K, V> {
  private readonly map = new Map<K, Node>();
  private held = 0;

  constructor(
    private readonly budget: MemoryBudget,
    readonly name: string,
    private readonly sizeOf: (value: V, key: K) => number,
    private readonly maxEntryBytes: number,
  ) {}

  get(key: K): V | undefined {
    const n = this.map.get(key);
    if (!n) return undefined;
    this.budget.touch(n);
    return n.value as V;
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  /** Keeps `value` (replacing what `key` held), unless it is larger than one entry may be. */
  set(key: K, value: V): void {
    this.delete(key);
    const bytes = Math.max(1, Math.ceil(this.sizeOf(value, key)));
    if (bytes > this.maxEntryBytes || bytes > this.budget.limitBytes) return;
    const n: Node = { owner: this as BudgetCache<unknown, unknown>, key, value, bytes, prev: null, next: null };
    this.map.set(key, n);
    this.held += bytes;
    this.budget.link(n);
  }

  delete(key: K): boolean {
    const n = this.map.get(key);
    if (!n) return false;
    this.drop(n);
    return true;
  }

  clear(): void {
    for (const n of [...this.map.values()]) this.drop(n);
  }

  get size(): number {
    return this.map.size;
  }

  /** Estimated bytes of this cache's entries. */
  get bytes(): number {
    return this.held;
  }

  /** @internal Called by the budget for its least recently used entry. */
  evict(n: Node): void {
    this.drop(n);
  }

  private drop(n: Node): void {
    this.map.delete(n.key as K);
    this.held -= n.bytes;
    this.budget.unlink(n);
  }
}

/**
 * Bytes that blob reads hold in flight (blob-reader.ts), shared by every
 * concurrent read of a store, so the memory of N downloads does not grow
 * with N times the read-ahead: each batch a reader fetches takes its bytes
 * here from before it is fetched (the stored forms, the decode buffers)
 * until it is handed to the consumer. A reader's next batch waits its turn
 * when none are free (first come, first served); batches read ahead of the
 * consumer are taken only while a quarter of the budget stays free. What the
 * consumer holds (a GET: the batch in the socket's queue, one per reader) is
 * not counted, so clients that read slowly or stop never hold the budget.
 */
/** Default budget of a store's blob reads: 8 batches of 2 MiB being read and decoded (about 3x that in memory: stored forms, decode buffers). */
export const DEFAULT_READ_BYTES = 16 * 1024 * 1024;

export class ReadBudget {
  private free: number;
  private readonly waiters: Array<{ n: number; resolve: () => void }> = [];

  constructor(readonly limitBytes: number) {
    if (!(limitBytes > 0)) throw new RangeError(`read budget must be > 0 bytes, not ${limitBytes}`);
    this.free = limitBytes;
  }

  /**
   * Takes n bytes (at most the whole budget: the amount taken, to give back)
   * once they are free and every reader that waited before has had its turn.
   */
  async take(n: number): Promise<number> {
    const want = Math.min(n, this.limitBytes);
    if (this.waiters.length === 0 && want <= this.free) {
      this.free -= want;
      return want;
    }
    await new Promise<void>((resolve) => this.waiters.push({ n: want, resolve }));
    return want;
  }

  /** Takes n bytes for reading ahead: only if nobody waits and `keepFree` bytes stay free after it. */
  tryTake(n: number, keepFree = 0): boolean {
    if (this.waiters.length > 0 || n + keepFree > this.free) return false;
    this.free -= n;
    return true;
  }

  give(n: number): void {
    this.free = Math.min(this.limitBytes, this.free + n);
    while (this.waiters.length > 0 && this.waiters[0]!.n <= this.free) {
      const w = this.waiters.shift()!;
      this.free -= w.n;
      w.resolve();
    }
  }

  get inUse(): number {
    return this.limitBytes - this.free;
  }

  /** Readers waiting for their next batch. */
  get waiting(): number {
    return this.waiters.length;
  }
}

/**
 * One memory budget for a process's caches (`serve --cache-memory`): blob
 * indexes, chunk sets, index differences, dictionary-compressed frames, the
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
 * Bytes that readers may hold in flight beyond what each needs to make
 * progress (blob-reader.ts read-ahead): shared by every concurrent read of a
 * store, so memory stays bounded however many clients download at once. A
 * reader that gets nothing here still reads, one batch at a time.
 */
/** Read-ahead shared by a store's blob reads (default): 16 batches of 2 MiB. */
export const DEFAULT_READ_AHEAD_BYTES = 32 * 1024 * 1024;

export class ReadAheadBudget {
  private free: number;

  constructor(readonly limitBytes: number) {
    this.free = limitBytes;
  }

  /** Takes n bytes if that many are free. */
  tryTake(n: number): boolean {
    if (n > this.free) return false;
    this.free -= n;
    return true;
  }

  give(n: number): void {
    this.free = Math.min(this.limitBytes, this.free + n);
  }

  get inUse(): number {
    return this.limitBytes - this.free;
  }
}

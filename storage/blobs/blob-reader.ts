import type { Piece } from './chunk-index.js';
import type { BlobIndex } from './blob-index.js';
import type { ChunkStore } from '../chunks/chunk-store.js';
import type { Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';
import type { ReadBudget } from '../memory-budget.js';

export interface ReadOptions {
  /** Batches read ahead of the consumer (default 6). */
  readAhead?: number;
  /** Largest batch of consecutive chunks fetched at once (default 2 MiB, at least one chunk). */
  batchBytes?: number;
  /**
   * Shared by concurrent readers (memory-budget.ts): every batch holds its
   * bytes from before it is fetched until it is handed to the consumer; the
   * batch the consumer waits for waits for them, batches read ahead are taken
   * only while a quarter of the budget stays free. Without it, a reader holds
   * up to readAhead batches.
   */
  budget?: ReadBudget;
}

/**
 * Streams bytes [start, end) of a blob from its chunks, every chunk verified.
 * The index says which chunk pieces make the range (whole chunks in order for
 * byte chunks; for a qcow2 index, cuts of guest-data and residue chunks in
 * host order). Chunks are fetched in batches (one store call and one buffer
 * per batch), a few batches ahead, so memory is bounded by readAhead x
 * batchBytes whatever the blob size, and by the budget (plus the one batch
 * each consumer holds) whatever the number of readers. A batch that is a
 * plain run of chunks is handed out as it is; one made of cuts is copied out
 * piece by piece.
 */
export async function* readBlob(store: ChunkStore, index: BlobIndex, start = 0, end = index.size, opts: ReadOptions = {}): AsyncGenerator<Buffer> {
  if (!(start >= 0 && end <= index.size && start <= end)) {
    throw new SnapyardError('RANGE_INVALID', `range ${start}-${end} outside blob of ${index.size} bytes`);
  }
  if (start === end) return;
  // A whole blob: a remote store locates all its chunks up front, a few catalog calls instead of one per batch.
  if (store.prepareReads && start === 0 && end === index.size) {
    const all = new Set<Digest>();
    for (const list of index.lists()) for (let i = 0; i < list.count; i++) all.add(list.digestAt(i));
    await store.prepareReads([...all]);
  }
  const readAhead = opts.readAhead ?? 6;
  const batchBytes = opts.batchBytes ?? 2 * 1024 * 1024;
  const pieces = index.blobPieces(start, end);
  let carry: Piece | undefined = pieces.next().value as Piece | undefined;
  const pending: Array<{ batch: Piece[]; data: Promise<Buffer>; taken: number }> = [];
  const budget = opts.budget;
  /** Starts fetching the next batch, holding `taken` bytes of the budget. */
  const next = (taken: number) => {
    const batch: Piece[] = [];
    const digests: Digest[] = [];
    const lengths: number[] = [];
    let bytes = 0;
    while (carry) {
      const p: Piece = carry;
      const prev = batch[batch.length - 1];
      const same = prev !== undefined && prev.list === p.list && prev.i === p.i;
      const len = p.list.lengths[p.i]!;
      if (!same) {
        if (digests.length > 0 && bytes + len > batchBytes) break;
        digests.push(p.list.digestAt(p.i));
        lengths.push(len);
        bytes += len;
      }
      batch.push(p);
      carry = pieces.next().value as Piece | undefined;
    }
    const data = store.getConcat(digests, lengths);
    data.catch(() => {}); // observed when awaited; no unhandled rejection if the consumer stops early
    pending.push({ batch, data, taken });
  };
  /** Batches read ahead of the one the consumer waits for, while the budget has room to spare (a quarter stays for readers' next batches). */
  const ahead = () => {
    while (pending.length < readAhead && carry) {
      if (budget && !budget.tryTake(batchBytes, budget.limitBytes / 4)) break;
      next(budget ? batchBytes : 0);
    }
  };
  try {
    for (;;) {
      if (pending.length === 0) {
        if (!carry) break;
        // The batch the consumer will wait for: its turn in the budget first.
        next(budget ? await budget.take(batchBytes) : 0);
        ahead();
      }
      const { batch, data: promised, taken } = pending[0]!;
      const data = await promised;
      pending.shift();
      // Handed out: from here it is the consumer's (one batch per reader, e.g. in a socket's queue).
      // Given back before reading ahead, so a lone reader keeps readAhead batches in flight
      // (the other order left it one short and cost a single GET ~15%).
      budget?.give(taken);
      ahead();
      yield cut(store, batch, data);
    }
  } finally {
    // A consumer that stopped early (or a failed read): what this reader still holds goes back.
    if (budget) for (const p of pending.splice(0)) budget.give(p.taken);
  }
}

/** The bytes a batch's pieces describe, from the concatenated chunks fetched for it. */
function cut(store: ChunkStore, batch: Piece[], data: Buffer): Buffer {
  // A run of whole chunks (trimmed only at its two ends) is one view of data.
  let plain = true;
  for (let k = 0; k < batch.length && plain; k++) {
    const p = batch[k]!;
    const prev = batch[k - 1];
    if (prev && prev.list === p.list && prev.i === p.i) plain = false;
    else if ((k > 0 && p.from !== 0) || (k < batch.length - 1 && p.to !== p.list.lengths[p.i]!)) plain = false;
  }
  if (plain) {
    const first = batch[0]!;
    const last = batch[batch.length - 1]!;
    const from = first.from;
    const to = data.byteLength - (last.list.lengths[last.i]! - last.to);
    return from === 0 && to === data.byteLength ? data : data.subarray(from, to);
  }
  let total = 0;
  for (const p of batch) total += p.to - p.from;
  // Reused memory when the store has some (the consumer hands it back through release(), as it does `data`).
  const out = store.scratch?.(total) ?? Buffer.allocUnsafe(total);
  let at = 0;
  let chunkStart = 0;
  for (let k = 0; k < batch.length; k++) {
    const p = batch[k]!;
    const prev = batch[k - 1];
    if (prev && !(prev.list === p.list && prev.i === p.i)) chunkStart += prev.list.lengths[prev.i]!;
    at += data.copy(out, at, chunkStart + p.from, chunkStart + p.to);
  }
  store.release?.(data);
  return out;
}

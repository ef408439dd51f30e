/**
 * Resemblance sketches of chunks, and an index that finds, for a chunk the
 * client lacks, the held chunks most likely to share content with it (to be
 * used as a zstd raw-content dictionary, see dict-codec.ts).
 *
 * Sketch (format 1): a gear rolling hash over the chunk, h = (h << 1) + GEAR[b]
 * in 32 bits, so h depends on the last 32 bytes only. A position i >= 31 is an
 * anchor when the top ANCHOR_BITS bits of h are zero (one position in 2^bits;
 * the top bits are the ones every byte of the window reaches; the low bits
 * of a gear hash only see the last few bytes). An anchor's value is a
 * murmur3-style hash of its 32-byte window (the gear hash itself has only
 * 32 - bits free bits once selected). Windows that repeat with a period of
 * 1..8 bytes (zero fill, 0xFF padding, 00 FF patterns) give no anchor, so
 * constant chunks have an empty sketch and do not match everything. The sketch
 * is the sorted set of distinct anchor values. Anchors are chosen by content
 * alone, so a region shared by two chunks gives both the same anchors,
 * wherever it sits in each chunk (shifted content still matches).
 *
 * Persisted form (encodeSketch): byte 0 = format (1), byte 1 = anchor bits,
 * then the sorted values as LEB128 varints of their differences (the first
 * value as is): ~4 bytes per value, ~270 bytes for the average 64 KiB chunk
 * (bench corpus; 16 KiB: ~70 bytes, 256 KiB: ~1 KiB).
 *
 * ResemblanceIndex: an open-addressing table (typed arrays) from anchor value
 * to a linked list of postings (u32 chunk ids, typed arrays): 8 bytes per
 * posting plus 9 bytes per table slot (load <= 3/4); ~2 KB per 64 KiB chunk
 * held (18 MB for the 11.8k distinct chunks of a 1 GB image). An anchor held by more than MAX_DF chunks
 * is saturated: it stops taking postings and gets no vote (a hub says
 * nothing about which chunk is similar). similar() picks up to k held
 * chunks greedily by the query anchors they share that earlier picks do not
 * (the first pick: most shared anchors), ties to the smaller id.
 */
import { SnapyardError } from '../errors.js';

/** Default anchor density: one position in 2^10 (~64 anchors in a 64 KiB chunk). */
export const ANCHOR_BITS = 10;
export const SKETCH_FORMAT = 1;
const WINDOW = 32;
/** Longest repeat period (bytes) treated as filler. */
const MAX_PERIOD = 8;
/** Postings kept per anchor value; beyond it the value is saturated (ignored). */
export const MAX_DF = 64;

/** The gear table: 256 fixed 32-bit values (splitmix32 from a fixed seed). */
const GEAR: Int32Array = (() => {
  const g = new Int32Array(256);
  let x = 0x736e6170; // "snap"
  for (let i = 0; i < 256; i++) {
    x = (x + 0x9e3779b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    g[i] = z ^ (z >>> 16);
  }
  return g;
})();

/** True when the window raw[start, start+32) repeats with a period of 1..MAX_PERIOD bytes. */
function periodic(raw: Uint8Array, start: number): boolean {
  const end = start + WINDOW;
  for (let p = 1; p <= MAX_PERIOD; p++) {
    let j = start + p;
    while (j < end && raw[j] === raw[j - p]) j++;
    if (j === end) return true;
  }
  return false;
}

/** murmur3-style 32-bit hash of the 32 bytes at raw[start]. */
function windowHash(raw: Uint8Array, start: number): number {
  let h = 0x5eed1e55;
  for (let j = start; j < start + WINDOW; j += 4) {
    let k = raw[j]! | (raw[j + 1]! << 8) | (raw[j + 2]! << 16) | (raw[j + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  h ^= WINDOW;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Bytes scanned before their anchors are hashed (the scan loop only records positions: ~1.5x faster). */
const SEGMENT = 65536;
/** Scratch (used synchronously only): anchor positions of a segment, anchor values of a chunk. */
const positions = new Int32Array(SEGMENT);
let scratch = new Uint32Array(1024);

/** The resemblance sketch of a chunk: sorted distinct anchor values. */
export function sketch(raw: Uint8Array, bits: number = ANCHOR_BITS): Uint32Array {
  if (!Number.isInteger(bits) || bits < 1 || bits > 24) throw new SnapyardError('INVALID_ARGUMENT', `sketch: bits ${bits} out of range`);
  const mask = (0xffffffff << (32 - bits)) | 0;
  const g = GEAR;
  const pos = positions;
  const len = raw.length;
  let h = 0;
  let n = 0;
  let i = Math.min(WINDOW - 1, len);
  for (let j = 0; j < i; j++) h = ((h << 1) + g[raw[j]!]!) | 0;
  while (i < len) {
    const end = Math.min(len, i + SEGMENT);
    let np = 0;
    for (; i < end; i++) {
      h = ((h << 1) + g[raw[i]!]!) | 0;
      if ((h & mask) === 0) pos[np++] = i;
    }
    if (scratch.length < n + np) n = sortUnique(n); // repetitive data: many equal values
    if (scratch.length < n + np) {
      const bigger = new Uint32Array(Math.max(2 * scratch.length, n + np));
      bigger.set(scratch.subarray(0, n));
      scratch = bigger;
    }
    for (let x = 0; x < np; x++) {
      const start = pos[x]! - (WINDOW - 1);
      if (!periodic(raw, start)) scratch[n++] = windowHash(raw, start);
    }
  }
  return scratch.slice(0, sortUnique(n));
}

/** Sorts scratch[0, n) and drops repeats; returns the new count. */
function sortUnique(n: number): number {
  const vals = scratch.subarray(0, n).sort();
  let m = 0;
  for (let i = 0; i < n; i++) if (m === 0 || vals[i] !== vals[m - 1]) vals[m++] = vals[i]!;
  return m;
}

/** Persisted form of a sketch (see the header comment). */
export function encodeSketch(s: Uint32Array, bits: number = ANCHOR_BITS): Buffer {
  const out = Buffer.allocUnsafe(2 + 5 * s.length);
  out[0] = SKETCH_FORMAT;
  out[1] = bits;
  let at = 2;
  let prev = 0;
  for (let i = 0; i < s.length; i++) {
    const v = s[i]!;
    if (i > 0 && v <= prev) throw new SnapyardError('INVALID_ARGUMENT', 'encodeSketch: values must be strictly increasing');
    let d = i === 0 ? v : v - prev;
    while (d >= 0x80) {
      out[at++] = (d & 0x7f) | 0x80;
      d >>>= 7;
    }
    out[at++] = d;
    prev = v;
  }
  return out.subarray(0, at);
}

function badSketch(why: string): never {
  throw new SnapyardError('INVALID_ARGUMENT', `decodeSketch: ${why}`);
}

/**
 * Inverse of encodeSketch; anything malformed is INVALID_ARGUMENT. Integer
 * arithmetic only, and the output sized by a count of the varints first (a
 * held set's 12k sketches were decoded in 200-300 ms with floating-point
 * shifts and an oversized array sliced to fit).
 */
export function decodeSketch(b: Uint8Array, bits: number = ANCHOR_BITS): Uint32Array {
  const len = b.length;
  if (len < 2 || b[0] !== SKETCH_FORMAT) badSketch('unknown format');
  if (b[1] !== bits) badSketch(`sketch made with ${b[1]} anchor bits, expected ${bits}`);
  let count = 0;
  for (let at = 2; at < len; at++) if (b[at]! < 0x80) count++;
  const out = new Uint32Array(count);
  let n = 0;
  let prev = 0;
  let at = 2;
  while (at < len) {
    let d = 0;
    let shift = 0;
    for (;;) {
      if (at >= len || shift > 28) badSketch('truncated or overlong varint');
      const byte = b[at++]!;
      // The fifth byte carries bits 28-31: more than 4 of them is past u32.
      if (shift === 28 && (byte & 0x70) !== 0) badSketch('values not strictly increasing u32');
      d = (d | ((byte & 0x7f) << shift)) >>> 0;
      shift += 7;
      if (byte < 0x80) break;
    }
    const v = n === 0 ? d : prev + d;
    if (v > 0xffffffff || (n > 0 && d === 0)) badSketch('values not strictly increasing u32');
    out[n++] = v;
    prev = v;
  }
  return out;
}

export class ResemblanceIndex {
  private keys: Uint32Array;
  /** First posting of the slot's value, -1 = empty slot. */
  private heads: Int32Array;
  /** Chunks that hold the slot's value, counted up to MAX_DF + 1 (saturated). */
  private df: Uint8Array;
  private used = 0;
  private postId: Uint32Array;
  private postNext: Int32Array;
  private posts = 0;
  /** Chunks added. */
  size = 0;

  /**
   * `values`: the sum of the sketch lengths about to be added, when known: the
   * tables start at the size they will need instead of doubling their way
   * there (each doubling rehashes every value).
   */
  constructor(values = 0) {
    let slots = 1024;
    while (slots * 3 < values * 4) slots *= 2;
    this.keys = new Uint32Array(slots);
    this.heads = new Int32Array(slots).fill(-1);
    this.df = new Uint8Array(slots);
    const posts = Math.max(4096, values);
    this.postId = new Uint32Array(posts);
    this.postNext = new Int32Array(posts);
  }

  private slot(v: number): number {
    const mask = this.keys.length - 1;
    let i = Math.imul(v, 0x9e3779b1) >>> 0 & mask;
    while (this.heads[i] !== -1 && this.keys[i] !== v) i = (i + 1) & mask;
    return i;
  }

  private grow(): void {
    const { keys, heads, df } = this;
    this.keys = new Uint32Array(keys.length * 2);
    this.heads = new Int32Array(keys.length * 2).fill(-1);
    this.df = new Uint8Array(keys.length * 2);
    for (let i = 0; i < keys.length; i++) {
      if (heads[i] === -1) continue;
      const j = this.slot(keys[i]!);
      this.keys[j] = keys[i]!;
      this.heads[j] = heads[i]!;
      this.df[j] = df[i]!;
    }
  }

  /** Adds a held chunk (each id once; ids are integers in [0, 2^32)). */
  add(id: number, s: Uint32Array): void {
    if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) throw new SnapyardError('INVALID_ARGUMENT', `ResemblanceIndex.add: bad id ${id}`);
    this.size++;
    for (let i = 0; i < s.length; i++) {
      if ((this.used + 1) * 4 > this.keys.length * 3) this.grow();
      const v = s[i]!;
      const j = this.slot(v);
      if (this.heads[j] === -1) {
        this.keys[j] = v;
        this.used++;
      }
      if (this.df[j]! > MAX_DF) continue; // saturated already
      if (++this.df[j]! > MAX_DF) continue; // saturated now: its postings are never read again
      if (this.posts === this.postId.length) {
        const ids = new Uint32Array(this.posts * 2);
        ids.set(this.postId);
        const next = new Int32Array(this.posts * 2);
        next.set(this.postNext);
        this.postId = ids;
        this.postNext = next;
      }
      this.postId[this.posts] = id;
      this.postNext[this.posts] = this.heads[j]!;
      this.heads[j] = this.posts++;
    }
  }

  /**
   * Up to k held chunks to use together as a dictionary for the chunk of
   * sketch `s`, best first: the one sharing the most of its anchors, then
   * greedily the one sharing the most anchors none of those picked shares
   * (a chunk made of pieces of several held chunks gets one of each rather
   * than near-copies of one). A pick needs at least minVotes such anchors;
   * ties go to more shared anchors in all, then to the smaller id.
   */
  similar(s: Uint32Array, k = 3, minVotes = 1): number[] {
    const lists: number[] = []; // posting list heads of the query's useful anchors
    for (let i = 0; i < s.length; i++) {
      const j = this.slot(s[i]!);
      if (this.heads[j] !== -1 && this.df[j]! <= MAX_DF) lists.push(this.heads[j]!);
    }
    const total = new Map<number, number>();
    for (const head of lists) {
      for (let p = head; p !== -1; p = this.postNext[p]!) total.set(this.postId[p]!, (total.get(this.postId[p]!) ?? 0) + 1);
    }
    const picked: number[] = [];
    const open = lists.slice(); // anchors no picked chunk shares
    let votes = total;
    while (picked.length < k) {
      let best = -1;
      let bestVotes = 0;
      for (const [id, n] of votes) {
        if (n < bestVotes || picked.includes(id)) continue;
        if (n > bestVotes || total.get(id)! > total.get(best)! || (total.get(id) === total.get(best) && id < best)) {
          best = id;
          bestVotes = n;
        }
      }
      if (best === -1 || bestVotes < Math.max(1, minVotes)) break;
      picked.push(best);
      if (picked.length === k) break;
      votes = new Map<number, number>();
      let kept = 0;
      for (const head of open) {
        let has = false;
        for (let p = head; p !== -1 && !has; p = this.postNext[p]!) has = this.postId[p] === best;
        if (has) continue;
        open[kept++] = head;
        for (let p = head; p !== -1; p = this.postNext[p]!) votes.set(this.postId[p]!, (votes.get(this.postId[p]!) ?? 0) + 1);
      }
      open.length = kept;
    }
    return picked;
  }

  /** Gives back the postings' unused room once every chunk is added (a later add grows it again). */
  trim(): void {
    if (this.postId.length === this.posts) return;
    this.postId = this.postId.slice(0, Math.max(1, this.posts));
    this.postNext = this.postNext.slice(0, Math.max(1, this.posts));
  }

  /** Approximate bytes held by the tables. */
  get memoryBytes(): number {
    return this.keys.byteLength + this.heads.byteLength + this.df.byteLength + this.postId.byteLength + this.postNext.byteLength;
  }
}

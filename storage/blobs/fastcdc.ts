/**
 * FastCDC v2020 (normalization level 1, seed 0), producing exactly the cut
 * points and gear hashes of fastcdc-rs `v2020::FastCDC` / `StreamCDC`.
 *
 * Cut semantics (per chunk, over `remaining` bytes from the chunk start):
 *   remaining <= min          -> the whole remainder is one chunk (hash 0)
 *   remaining >  max          -> remaining = max
 *   remaining <  avg          -> center = remaining, else center = avg
 *   for index in [min/2, center/2) with mask_s, then [.., remaining/2) with mask_l,
 *   a = 2*index:  h = (h << 2) + GEAR_LS[b[a]];  (h & mask<<1) == 0 -> cut at a
 *                 h =  h       + GEAR[b[a+1]];   (h & mask)    == 0 -> cut at a+1
 *   no cut -> chunk of `remaining` bytes (integer division throughout).
 *
 * The byte loop runs in a small WebAssembly kernel (see fastcdc-kernel.ts).
 * Data is copied into wasm memory: `cut` copies only as far as the scan gets
 * (in blocks), `chunkStream` reads the source straight into a window that
 * lives in its own kernel's memory.
 */
import { SnapyardError } from '../errors.js';
import { GearKernel } from './fastcdc-kernel.js';

export interface FastCDCParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
}

export const DEFAULT_FASTCDC: FastCDCParams = { minSize: 16384, avgSize: 65536, maxSize: 262144 };

/** Limits of fastcdc-rs (MINIMUM_MIN ... MAXIMUM_MAX). */
const LIMITS = {
  minSize: [64, 1_048_576],
  avgSize: [256, 4_194_304],
  maxSize: [1024, 16_777_216],
} as const;

/** MASKS[bits] from fastcdc-rs (destor C reference + restic-FastCDC). */
const MASKS: readonly bigint[] = [
  0n, 0n, 0n, 0n, 0n,
  0x0000000001804110n, 0x0000000001803110n, 0x0000000018035100n, 0x0000001800035300n,
  0x0000019000353000n, 0x0000590003530000n, 0x0000d90003530000n, 0x0000d90103530000n,
  0x0000d90303530000n, 0x0000d90313530000n, 0x0000d90f03530000n, 0x0000d90303537000n,
  0x0000d90703537000n, 0x0000d90707537000n, 0x0000d91707537000n, 0x0000d91747537000n,
  0x0000d91767537000n, 0x0000d93767537000n, 0x0000d93777537000n, 0x0000d93777577000n,
  0x0000db3777577000n,
];
const NORMALIZATION_LEVEL = 1;

function validateParams(params: FastCDCParams): FastCDCParams {
  if (params === null || typeof params !== 'object') {
    throw new SnapyardError('INVALID_ARGUMENT', 'FastCDC params must be an object');
  }
  for (const key of ['minSize', 'avgSize', 'maxSize'] as const) {
    const v = params[key];
    const [lo, hi] = LIMITS[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo || v > hi) {
      throw new SnapyardError('INVALID_ARGUMENT', `FastCDC ${key} must be an integer in [${lo}, ${hi}], got ${String(v)}`, {
        detail: { [key]: v },
      });
    }
  }
  const { minSize, avgSize, maxSize } = params;
  if (!(minSize <= avgSize && avgSize <= maxSize)) {
    throw new SnapyardError(
      'INVALID_ARGUMENT',
      `FastCDC sizes must satisfy minSize <= avgSize <= maxSize, got ${minSize}/${avgSize}/${maxSize}`,
      { detail: { minSize, avgSize, maxSize } },
    );
  }
  return { minSize, avgSize, maxSize };
}

/** Shared kernel for `cut`: every use is synchronous, so sharing is safe. */
let sharedKernel: GearKernel | undefined;
let sharedCapacity = 0;
function kernelFor(capacity: number): GearKernel {
  if (sharedKernel === undefined || sharedCapacity < capacity) {
    sharedCapacity = Math.max(capacity, sharedCapacity, 1 << 20);
    sharedKernel = new GearKernel(sharedCapacity);
  }
  return sharedKernel;
}

/** Validated parameters plus the derived masks. */
interface Config {
  readonly min: number;
  readonly avg: number;
  readonly max: number;
  readonly maskS: bigint;
  readonly maskL: bigint;
}

function configFor(params: FastCDCParams): Config {
  const { minSize: min, avgSize: avg, maxSize: max } = validateParams(params);
  const bits = Math.round(Math.log2(avg));
  return { min, avg, max, maskS: MASKS[bits + NORMALIZATION_LEVEL]!, maskL: MASKS[bits - NORMALIZATION_LEVEL]! };
}

/**
 * Cut for data already resident in `k.data` at [off, off + available): the
 * copy-free path of chunkStream. Same contract as FastCDC.cut.
 */
function cutResident(c: Config, k: GearKernel, off: number, available: number): number {
  let remaining = available;
  if (remaining <= c.min) return remaining;
  let center = c.avg;
  if (remaining > c.max) remaining = c.max;
  else if (remaining < center) center = remaining;
  const r = k.scan(off + (c.min & ~1), off + (center & ~1), off + (remaining & ~1), c.maskS, c.maskL, 0n);
  return r >= 0 ? r - off : remaining;
}

export class FastCDC {
  readonly params: FastCDCParams;
  private readonly c: Config;
  /** Copy granularity of `cut`: the scan rarely reads far past a typical chunk. */
  private readonly block: number;
  private lastHash = 0n;

  constructor(params: FastCDCParams = DEFAULT_FASTCDC) {
    this.c = configFor(params);
    this.params = Object.freeze({ minSize: this.c.min, avgSize: this.c.avg, maxSize: this.c.max });
    this.block = Math.max(this.c.avg, 32768);
  }

  /**
   * Length of the chunk that starts at buf[start], looking at buf[start, end).
   * Caller guarantees that either end-start >= maxSize or end is the end of the data (EOF).
   */
  cut(buf: Uint8Array, start: number, end: number): number {
    if (!(buf instanceof Uint8Array)) throw new SnapyardError('INVALID_ARGUMENT', 'cut: buf must be a Uint8Array');
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end > buf.length) {
      throw new SnapyardError('INVALID_ARGUMENT', `cut: invalid range [${start}, ${end}) of ${buf.length} bytes`);
    }
    const c = this.c;
    let remaining = end - start;
    if (remaining <= c.min) {
      this.lastHash = 0n;
      return remaining;
    }
    let center = c.avg;
    if (remaining > c.max) remaining = c.max;
    else if (remaining < center) center = remaining;

    const k = kernelFor(c.max);
    const data = k.data;
    const endS = center & ~1;
    const endL = remaining & ~1;
    let p = c.min & ~1;
    let h = 0n;
    // Copy in blocks and resume the scan where the previous block ended, so a
    // short chunk does not pay for copying maxSize bytes.
    let have = Math.min(remaining, c.min + this.block);
    data.set(buf.subarray(start, start + have), 0);
    for (;;) {
      const lim = have & ~1; // only whole byte pairs are scanned
      const r = k.scan(p, Math.min(endS, lim), Math.min(endL, lim), c.maskS, c.maskL, h);
      if (r >= 0 || have === remaining) {
        this.lastHash = k.hash;
        return r >= 0 ? r : remaining;
      }
      p = Math.max(p, lim);
      h = k.hash;
      const n = Math.min(this.block, remaining - have);
      data.set(buf.subarray(start + have, start + have + n), have);
      have += n;
    }
  }

  /** Same, also returning the gear hash (u64 as bigint) at the cut, for conformance tests. */
  cutWithHash(buf: Uint8Array, start: number, end: number): { length: number; hash: bigint } {
    const length = this.cut(buf, start, end);
    return { length, hash: this.lastHash };
  }
}

export interface Chunk {
  offset: number;
  length: number;
  /**
   * A private copy that stays valid after the generator moves on; with
   * `{ copy: false }`, a view of the chunker's window, valid only until the
   * generator is resumed.
   */
  data: Buffer;
}

/**
 * Streaming chunker: memory bounded by ~2*maxSize regardless of input size;
 * cuts identical to chunking the whole input at once.
 *
 * Source pieces are copied into a window of 2*maxSize bytes inside a private
 * wasm memory; a chunk is cut whenever at least maxSize bytes are buffered
 * (or at EOF), which is all `cut` ever looks at, so piece boundaries cannot
 * change the result.
 */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array>,
  params: FastCDCParams = DEFAULT_FASTCDC,
  opts: { copy?: boolean } = {},
): AsyncGenerator<Chunk> {
  const copy = opts.copy !== false;
  const c = configFor(params);
  const max = c.max;
  const cap = 2 * max;
  const k = new GearKernel(cap);
  const win = k.data;
  let len = 0; // bytes buffered in win[0, len)
  let pos = 0; // start of the next chunk in win
  let offset = 0; // absolute offset of win[pos]

  const take = (length: number): Chunk => {
    let data: Buffer;
    if (copy) {
      data = Buffer.allocUnsafe(length);
      data.set(win.subarray(pos, pos + length));
    } else {
      data = Buffer.from(win.buffer, win.byteOffset + pos, length);
    }
    const chunk = { offset, length, data };
    pos += length;
    offset += length;
    return chunk;
  };

  for await (const piece of source) {
    if (!(piece instanceof Uint8Array)) {
      throw new SnapyardError('INVALID_ARGUMENT', 'chunkStream: source must yield Uint8Array pieces');
    }
    let i = 0;
    while (i < piece.length) {
      if (len === cap) {
        // Window full: fewer than max bytes are pending (we cut whenever
        // >= max are), so moving them to the front frees at least max bytes.
        win.copyWithin(0, pos, len);
        len -= pos;
        pos = 0;
      }
      const n = Math.min(cap - len, piece.length - i);
      win.set(n === piece.length ? piece : piece.subarray(i, i + n), len);
      len += n;
      i += n;
      while (len - pos >= max) yield take(cutResident(c, k, pos, len - pos));
    }
  }
  while (pos < len) yield take(cutResident(c, k, pos, len - pos));
}

/** Convenience for whole buffers (tests, small data). */
export function chunkBuffer(buf: Uint8Array, params: FastCDCParams = DEFAULT_FASTCDC): Array<{ offset: number; length: number }> {
  const cdc = new FastCDC(params);
  const out: Array<{ offset: number; length: number }> = [];
  for (let pos = 0; pos < buf.length; ) {
    const length = cdc.cut(buf, pos, buf.length);
    out.push({ offset: pos, length });
    pos += length;
  }
  return out;
}

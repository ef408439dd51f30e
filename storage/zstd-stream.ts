/**
 * zstd decompression of untrusted input with a running cap: output comes in
 * pieces of at most OUT_PIECE bytes, counted as they are produced, so a
 * "bomb" (a few KB expanding to GBs) costs at most `limit` bytes of output and
 * never more memory than one piece (zstd-napi's DecompressStream expands a
 * whole input piece before anyone can count it; its Decompressor allocates
 * whatever a frame header claims). The window is capped too: a frame asking
 * for a bigger one is refused instead of allocated.
 */
import binding from 'zstd-napi/binding.js';
import { SnapyardError } from './errors.js';

const OUT_PIECE = 128 * 1024;
/** 16 MiB windows at most (snapyard's clients use at most 8 MiB). */
export const WINDOW_LOG_MAX = 24;

/** Decompressed output went past its cap (HTTP 413). */
export function tooLarge(what: string, limit: number): SnapyardError {
  return new SnapyardError('LIMIT_EXCEEDED', `${what} decompresses to more than ${limit} bytes`, { detail: { limit, status: 413 } });
}

function notZstd(what: string, why: string): SnapyardError {
  return new SnapyardError('SIZE_INVALID', `${what} is not a valid zstd stream: ${why}`);
}

type DCtx = InstanceType<typeof binding.DCtx>;

function newContext(windowLogMax: number, dict?: Uint8Array): DCtx {
  const d = new binding.DCtx();
  d.setParameter(binding.DParameter.windowLogMax, windowLogMax);
  if (dict && dict.byteLength > 0) d.loadDictionary(dict);
  return d;
}

/** Feeds `src` through the context, handing each output piece to `emit`; returns whether a frame is still open. */
function* step(d: DCtx, src: Buffer, what: string): Generator<Buffer, boolean> {
  let open = true;
  for (;;) {
    const out = Buffer.allocUnsafe(OUT_PIECE);
    let ret: number;
    let produced: number;
    let consumed: number;
    try {
      [ret, produced, consumed] = d.decompressStream(out, src);
    } catch (e) {
      throw notZstd(what, (e as Error).message);
    }
    src = src.subarray(consumed);
    open = ret !== 0;
    if (produced > 0) yield out.subarray(0, produced);
    if (src.byteLength === 0 && produced < OUT_PIECE) return open;
    if (consumed === 0 && produced === 0) throw notZstd(what, 'decoder made no progress');
  }
}

/**
 * Decompresses a stream of zstd frames, yielding pieces of at most 128 KiB;
 * LIMIT_EXCEEDED once more than `limit` bytes came out, SIZE_INVALID for
 * corrupt or truncated input.
 */
export async function* unzstdBounded(source: AsyncIterable<Uint8Array>, limit: number, what = 'body'): AsyncGenerator<Buffer> {
  const d = newContext(WINDOW_LOG_MAX);
  let total = 0;
  let open = false;
  let any = false;
  for await (const input of source) {
    if (input.byteLength === 0) continue;
    any = true;
    const it = step(d, Buffer.from(input.buffer, input.byteOffset, input.byteLength), what);
    for (;;) {
      const r = it.next();
      if (r.done) {
        open = r.value;
        break;
      }
      total += r.value.byteLength;
      if (total > limit) throw tooLarge(what, limit);
      yield r.value;
    }
  }
  if (!any) throw notZstd(what, 'empty');
  if (open) throw notZstd(what, 'it ends inside a frame');
}

/** One buffer of zstd frames, decompressed (with an optional raw-content dictionary) to at most `limit` bytes. */
export function unzstdBuffer(payload: Uint8Array, limit: number, what = 'data', dict?: Uint8Array, windowLogMax = WINDOW_LOG_MAX): Buffer {
  const d = newContext(windowLogMax, dict);
  const parts: Buffer[] = [];
  let total = 0;
  const it = step(d, Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength), what);
  for (;;) {
    const r = it.next();
    if (r.done) {
      if (r.value) throw notZstd(what, 'it ends inside a frame');
      break;
    }
    total += r.value.byteLength;
    if (total > limit) throw tooLarge(what, limit);
    parts.push(r.value);
  }
  return Buffer.concat(parts, total);
}

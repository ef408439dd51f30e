/**
 * WebAssembly kernel for the FastCDC v2020 gear-hash scan.
 *
 * Why WebAssembly, and why a hand-written encoder:
 * - The gear hash is a u64. JS numbers cannot hold it, BigInt is ~100x too
 *   slow, and emulating it in two 32-bit lanes tops out around 260 MB/s here.
 *   Wasm has native i64 arithmetic, so the hot loop is a handful of machine
 *   instructions per byte and the hash is exact in all 64 bits (which the
 *   conformance vectors assert, not just the 49 low bits the masks see).
 * - The module is tiny (one function), so it is emitted below by a ~60-line
 *   binary encoder instead of being assembled from WAT with `wabt` (a 4 MB
 *   runtime dependency) or committed as an opaque .wasm blob. The WAT
 *   equivalent is given next to the encoder so the bytes can be reviewed.
 *
 * Memory layout (the memory is imported, one per kernel instance):
 *   [0, 2048)     GEAR_LS[256]  (GEAR[i] << 1 mod 2^64, little-endian u64)
 *   [2048, 4096)  GEAR[256]
 *   [4096, ...)   data; every address the kernel takes is relative to 4096
 */
import { createHash } from 'node:crypto';

const TABLE_BYTES = 4096;
const PAGE = 65536;

/**
 * GEAR[i] = first 8 bytes (big-endian) of MD5 of 64 bytes all equal to i
 * (the table of fastcdc-rs and of the destor C reference). Derived instead of
 * pasted; test/fastcdc.test.ts checks it against the published table.
 */
function deriveGear(): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < 256; i++) {
    out.push(createHash('md5').update(Buffer.alloc(64, i)).digest().readBigUInt64BE(0));
  }
  return out;
}

let gearCache: readonly bigint[] | undefined;
/** The 256-entry GEAR table (u64 values). */
export function gearTable(): readonly bigint[] {
  gearCache ??= Object.freeze(deriveGear());
  return gearCache;
}

// ---------------------------------------------------------------------------
// Module encoder. The function is:
//
// (module
//   (import "env" "mem" (memory 1))
//   (global $hash (export "hash") (mut i64) (i64.const 0))
//   ;; Scans byte pairs at data[p], data[p+1] for p = p, p+2, ... ; small masks
//   ;; while p < endS, large masks while p < endL. Returns the cut (p or p+1)
//   ;; or -1 if none; $hash always holds the hash at exit (so a scan clipped to
//   ;; a partial window can be resumed by passing it back as $h).
//   (func (export "scan") (param $p i32) (param $endS i32) (param $endL i32)
//         (param $ms i64) (param $ml i64) (param $h i64) (result i32)
//     (local $msl i64) (local $mll i64) (local $h1 i64)
//     (local.set $msl (i64.shl (local.get $ms) (i64.const 1)))
//     (local.set $mll (i64.shl (local.get $ml) (i64.const 1)))
//     <PHASE $endS $msl $ms>
//     <PHASE $endL $mll $ml>
//     (global.set $hash (local.get $h))
//     (i32.const -1)))
//
// PHASE(end, mls, m): a rotated loop with ONE exit branch per byte pair (both
// mask tests are or-ed; which one fired is sorted out after leaving the loop).
// With two separate branches V8's code ran at either ~3.1 or ~2.2 GB/s
// depending on the process (code placement); this form measured a steady
// ~2.8 GB/s. Loading b[p+1] before knowing whether p cut is safe: p+1 < end.
//   (if (i32.lt_u (local.get $p) (local.get end)) (then
//     (block $found
//       (loop $l
//         (local.set $h (i64.add
//           (local.tee $h1 (i64.add (i64.shl (local.get $h) (i64.const 2))
//             (i64.load offset=0 (i32.shl (i32.load8_u offset=4096 (local.get $p)) (i32.const 3)))))
//           (i64.load offset=2048 (i32.shl (i32.load8_u offset=4097 (local.get $p)) (i32.const 3)))))
//         (br_if $found (i32.or (i64.eqz (i64.and (local.get $h1) (local.get mls)))
//                               (i64.eqz (i64.and (local.get $h) (local.get m)))))
//         (br_if $l (i32.lt_u (local.tee $p (i32.add (local.get $p) (i32.const 2))) (local.get end))))
//       (br 1))                                   ;; no cut before `end`: leave the if
//     (if (i64.eqz (i64.and (local.get $h1) (local.get mls)))
//       (then (global.set $hash (local.get $h1)) (return (local.get $p))))
//     (global.set $hash (local.get $h))
//     (return (i32.add (local.get $p) (i32.const 1)))))
// ---------------------------------------------------------------------------

const OP = {
  block: 0x02, loop: 0x03, if: 0x04, end: 0x0b, br: 0x0c, br_if: 0x0d, return: 0x0f, void: 0x40,
  local_get: 0x20, local_set: 0x21, local_tee: 0x22, global_set: 0x24,
  i64_load: 0x29, i32_load8_u: 0x2d, i32_const: 0x41, i64_const: 0x42,
  i32_lt_u: 0x49, i64_eqz: 0x50, i32_add: 0x6a, i32_shl: 0x74,
  i32_or: 0x72, i64_add: 0x7c, i64_and: 0x83, i64_shl: 0x86,
} as const;
const I32 = 0x7f;
const I64 = 0x7e;

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}
/** Signed LEB128, for the small constants used here (-64 <= n < 64 fits one byte). */
function sleb(n: number): number[] {
  if (n < -64 || n > 63) throw new Error('sleb: constant out of range');
  return [n & 0x7f];
}
function str(s: string): number[] {
  return [...uleb(s.length), ...Buffer.from(s, 'utf8')];
}
function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}
function vec(items: number[][]): number[] {
  return [...uleb(items.length), ...items.flat()];
}

// locals: 0 p, 1 endS, 2 endL, 3 ms, 4 ml, 5 h, 6 msl, 7 mll
const P = 0, END_S = 1, END_L = 2, MS = 3, ML = 4, H = 5, MSL = 6, MLL = 7, H1 = 8;
const get = (i: number) => [OP.local_get, i];
const memarg = (align: number, offset: number) => [...uleb(align), ...uleb(offset)];

function phase(end: number, maskShifted: number, mask: number): number[] {
  const gearLoad = (tableOffset: number, byteOffset: number) => [
    ...get(P), OP.i32_load8_u, ...memarg(0, TABLE_BYTES + byteOffset),
    OP.i32_const, ...sleb(3), OP.i32_shl,
    OP.i64_load, ...memarg(3, tableOffset),
  ];
  const isZero = (v: number, m: number) => [...get(v), ...get(m), OP.i64_and, OP.i64_eqz];
  return [
    ...get(P), ...get(end), OP.i32_lt_u, OP.if, OP.void,
    OP.block, OP.void,
    OP.loop, OP.void,
    ...get(H), OP.i64_const, ...sleb(2), OP.i64_shl, ...gearLoad(0, 0), OP.i64_add, OP.local_tee, H1,
    ...gearLoad(2048, 1), OP.i64_add, OP.local_set, H,
    ...isZero(H1, maskShifted), ...isZero(H, mask), OP.i32_or,
    OP.br_if, 1, // -> found
    ...get(P), OP.i32_const, ...sleb(2), OP.i32_add, OP.local_tee, P, ...get(end), OP.i32_lt_u,
    OP.br_if, 0, // -> loop
    OP.end, // loop
    OP.br, 1, // scanned to `end` without a cut: leave the if
    OP.end, // block: found
    ...isZero(H1, maskShifted),
    OP.if, OP.void, ...get(H1), OP.global_set, 0, ...get(P), OP.return, OP.end,
    ...get(H), OP.global_set, 0, ...get(P), OP.i32_const, ...sleb(1), OP.i32_add, OP.return,
    OP.end, // if
  ];
}

function encodeModule(): Uint8Array {
  const body = [
    ...uleb(1), ...uleb(3), I64, // locals: 3 x i64
    ...get(MS), OP.i64_const, ...sleb(1), OP.i64_shl, OP.local_set, MSL,
    ...get(ML), OP.i64_const, ...sleb(1), OP.i64_shl, OP.local_set, MLL,
    ...phase(END_S, MSL, MS),
    ...phase(END_L, MLL, ML),
    ...get(H), OP.global_set, 0,
    OP.i32_const, ...sleb(-1),
    OP.end,
  ];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I64], [I64], [I64]]), ...vec([[I32]])]])),
    ...section(2, vec([[...str('env'), ...str('mem'), 0x02, 0x00, ...uleb(1)]])),
    ...section(3, vec([uleb(0)])),
    ...section(6, vec([[I64, 0x01, OP.i64_const, 0x00, OP.end]])),
    ...section(7, vec([[...str('scan'), 0x00, 0x00], [...str('hash'), 0x03, 0x00]])),
    ...section(10, vec([[...uleb(body.length), ...body]])),
  ];
  return Uint8Array.from(bytes);
}

/**
 * The subset of the WebAssembly JS API used here. The project's `lib`
 * (ES2023, no DOM) has no WebAssembly declarations, so they are spelled out.
 */
interface WasmModule { readonly __wasmModule: unique symbol }
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Memory: new (descriptor: { initial: number }) => { readonly buffer: ArrayBuffer };
  Instance: new (module: WasmModule, imports: object) => { readonly exports: Record<string, unknown> };
}
interface WasmGlobal { value: unknown }
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let compiled: WasmModule | undefined;
function wasmModule(): WasmModule {
  compiled ??= new WA.Module(encodeModule());
  return compiled;
}

type ScanFn = (p: number, endS: number, endL: number, ms: bigint, ml: bigint, h: bigint) => number;

/**
 * One kernel instance with its own memory; `data` views the data region
 * (capacity fixed at creation, so the view is never detached).
 * Not reentrant, but every call is synchronous, so one instance can be shared
 * by anything that does not keep data in it across an `await`.
 */
export class GearKernel {
  readonly data: Uint8Array;
  /**
   * scan(p, endS, endL, maskS, maskL, h0): offsets relative to `data`.
   * Returns the cut offset or -1; the gear hash at exit is in `hash.value`.
   */
  readonly scan: ScanFn;
  private readonly hashGlobal: WasmGlobal;

  constructor(dataCapacity: number) {
    const pages = Math.ceil((TABLE_BYTES + dataCapacity + 8) / PAGE);
    const memory = new WA.Memory({ initial: pages });
    const tables = new BigUint64Array(memory.buffer, 0, 512);
    const gear = gearTable();
    for (let i = 0; i < 256; i++) {
      const g = gear[i]!;
      tables[i] = BigInt.asUintN(64, g << 1n);
      tables[256 + i] = g;
    }
    const instance = new WA.Instance(wasmModule(), { env: { mem: memory } });
    this.scan = instance.exports['scan'] as ScanFn;
    this.hashGlobal = instance.exports['hash'] as WasmGlobal;
    this.data = new Uint8Array(memory.buffer, TABLE_BYTES, pages * PAGE - TABLE_BYTES);
  }

  /** Gear hash (u64) as of the last scan's exit. */
  get hash(): bigint {
    return BigInt.asUintN(64, this.hashGlobal.value as bigint);
  }
}

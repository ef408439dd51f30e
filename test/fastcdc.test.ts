import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isSnapyardError } from '../storage/errors.js';
import { gearTable } from '../storage/blobs/fastcdc-kernel.js';
import { type FastCDCParams, DEFAULT_FASTCDC, FastCDC, chunkBuffer, chunkStream } from '../storage/blobs/fastcdc.js';

const FIXTURES = fileURLToPath(new URL('./fixtures/fastcdc/', import.meta.url));
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// ---- fixtures ---------------------------------------------------------------

interface Row {
  algo: string;
  input: string;
  params: FastCDCParams;
  idx: number;
  offset: number;
  length: number;
  hash: bigint | undefined;
  sha256: string | undefined;
}

const vectorsText = readFileSync(FIXTURES + 'vectors.tsv', 'utf8');
const rows: Row[] = vectorsText
  .split('\n')
  .filter((l) => l !== '' && !l.startsWith('#') && !l.startsWith('algo\t'))
  .map((l) => {
    const f = l.split('\t');
    const n = (i: number) => Number(f[i]);
    return {
      algo: f[0]!,
      input: f[1]!,
      params: { minSize: n(2), avgSize: n(3), maxSize: n(4) },
      idx: n(7),
      offset: n(8),
      length: n(9),
      hash: f[10] ? BigInt(f[10]) : undefined,
      sha256: f[11] || undefined,
    };
  });

/** concat SHA-256(le64 i) for i = 0.., [2MiB,3MiB) zeroed, [1MiB,2MiB) copied to [5MiB,6MiB). */
function syntheticInput(): Buffer {
  const MiB = 1 << 20;
  const out = Buffer.alloc(8 * MiB);
  const counter = Buffer.alloc(8);
  for (let i = 0; i * 32 < out.length; i++) {
    counter.writeBigUInt64LE(BigInt(i));
    createHash('sha256').update(counter).digest().copy(out, i * 32);
  }
  out.fill(0, 2 * MiB, 3 * MiB);
  out.copy(out, 5 * MiB, 1 * MiB, 2 * MiB);
  return out;
}

const inputs = new Map<string, Buffer>([
  ['SekienAkashita.jpg', readFileSync(FIXTURES + 'SekienAkashita.jpg')],
  ['zeros:10240', Buffer.alloc(10240)],
  ['synthetic-8MiB.bin', syntheticInput()],
]);
const input = (name: string) => inputs.get(name)!;

/** Rows grouped per (algo, input, params), in idx order. */
const groups = new Map<string, Row[]>();
for (const r of rows) {
  const key = `${r.algo} ${r.input} ${r.params.minSize}/${r.params.avgSize}/${r.params.maxSize}`;
  groups.set(key, [...(groups.get(key) ?? []), r]);
}

// GEAR and MASKS as published (gear_masks.txt), for the reference chunker below.
const tableText = readFileSync(FIXTURES + 'gear_masks.txt', 'utf8');
const tableValues = (name: string) =>
  [...tableText.matchAll(new RegExp(`^${name}\\[(\\d+)\\]\\t(0x[0-9a-f]+)`, 'gm'))].map((m) => BigInt(m[2]!));
const GEAR = tableValues('GEAR');
const MASKS = tableValues('MASKS');

// ---- independent reference (plain JS, two 32-bit lanes, slow) ---------------

interface RefChunk { offset: number; length: number; hash: bigint }

const lanes = (v: bigint[]) => ({
  hi: Uint32Array.from(v, (x) => Number(x >> 32n)),
  lo: Uint32Array.from(v, (x) => Number(x & 0xffffffffn)),
});

/** fastcdc-rs v2016 / v2020 at normalization level 1, written from the algorithm description. */
function referenceChunks(algo: 'v2016' | 'v2020', data: Uint8Array, p: FastCDCParams): RefChunk[] {
  const bits = Math.round(Math.log2(p.avgSize));
  const g = lanes(GEAR);
  const gls = lanes(GEAR.map((x) => BigInt.asUintN(64, x << 1n)));
  const ms = lanes([MASKS[bits + 1]!, MASKS[bits + 1]! << 1n]);
  const ml = lanes([MASKS[bits - 1]!, MASKS[bits - 1]! << 1n]);
  const out: RefChunk[] = [];
  for (let start = 0; start < data.length; ) {
    let remaining = data.length - start;
    let hi = 0, lo = 0, length = -1;
    // h = (h << s) + t[b] mod 2^64; true if (h & m[mi]) == 0
    const step = (s: number, t: typeof g, b: number, m: typeof ms, mi: number) => {
      if (s > 0) {
        hi = ((hi << s) | (lo >>> (32 - s))) >>> 0;
        lo = (lo << s) >>> 0;
      }
      const l = lo + t.lo[b]!;
      hi = (hi + t.hi[b]! + (l > 0xffffffff ? 1 : 0)) >>> 0;
      lo = l >>> 0;
      return ((hi & m.hi[mi]!) | (lo & m.lo[mi]!)) === 0;
    };
    const small = remaining <= p.minSize;
    if (small) {
      length = remaining;
    } else {
      let center = p.avgSize;
      if (remaining > p.maxSize) remaining = p.maxSize;
      else if (remaining < center) center = remaining;
      if (algo === 'v2016') {
        for (let i = p.minSize; i < remaining && length < 0; i++) {
          if (step(1, g, data[start + i]!, i < center ? ms : ml, 0)) length = i;
        }
      } else {
        for (let i = Math.floor(p.minSize / 2); i < Math.floor(remaining / 2) && length < 0; i++) {
          const m = i < Math.floor(center / 2) ? ms : ml;
          if (step(2, gls, data[start + 2 * i]!, m, 1)) length = 2 * i;
          else if (step(0, g, data[start + 2 * i + 1]!, m, 0)) length = 2 * i + 1;
        }
      }
      if (length < 0) length = remaining;
    }
    out.push({ offset: start, length, hash: small ? 0n : (BigInt(hi) << 32n) | BigInt(lo) });
    start += length;
  }
  return out;
}

// ---- helpers ------------------------------------------------------------------

function cutAll(data: Uint8Array, params: FastCDCParams): RefChunk[] {
  const cdc = new FastCDC(params);
  const out: RefChunk[] = [];
  for (let pos = 0; pos < data.length; ) {
    const { length, hash } = cdc.cutWithHash(data, pos, data.length);
    out.push({ offset: pos, length, hash });
    pos += length;
  }
  return out;
}

async function* pieces(data: Uint8Array, size: number | (() => number)): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; ) {
    const n = typeof size === 'number' ? size : size();
    yield data.subarray(i, i + n);
    i += n;
  }
}

async function streamAll(source: AsyncIterable<Uint8Array>, params?: FastCDCParams) {
  const out = [];
  for await (const c of chunkStream(source, params)) out.push(c);
  return out;
}

/** Deterministic pseudo-random bytes (xorshift32). */
function prng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x;
  };
}
function randomBytes(n: number, seed: number): Buffer {
  const r = prng(seed);
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = r() & 0xff;
  return b;
}

const expectInvalid = (fn: () => unknown) => {
  let err: unknown;
  try { fn(); } catch (e) { err = e; }
  expect(isSnapyardError(err, 'INVALID_ARGUMENT'), String(err)).toBe(true);
};

// ---- tests ----------------------------------------------------------------------

describe('fixtures', () => {
  it('synthetic input matches the sha256 in the vector header', () => {
    const want = /sha256\(input\)=([0-9a-f]{64})/.exec(vectorsText)![1];
    expect(sha256(input('synthetic-8MiB.bin'))).toBe(want);
    expect(sha256(input('SekienAkashita.jpg'))).toBe('d9e749d9367fc908876749d6502eb212fee88c9a94892fb07da5ef3ba8bc39ed');
    expect(rows.length).toBe(242);
  });

  it('the derived GEAR table equals the published one', () => {
    expect(GEAR.length).toBe(256);
    expect(MASKS.length).toBe(26);
    expect([...gearTable()]).toEqual(GEAR);
  });
});

describe('conformance vectors', () => {
  for (const [key, group] of groups) {
    const { algo, params } = group[0]!;
    const data = input(group[0]!.input);
    const check = (got: RefChunk[]) => {
      expect(got.length).toBe(group.length);
      group.forEach((r, i) => {
        const c = got[i]!;
        expect(r.idx).toBe(i);
        expect({ offset: c.offset, length: c.length }, `${key} #${i}`).toEqual({ offset: r.offset, length: r.length });
        if (r.hash !== undefined) expect(c.hash, `${key} #${i} hash`).toBe(r.hash);
        if (r.sha256 !== undefined) expect(sha256(data.subarray(c.offset, c.offset + c.length))).toBe(r.sha256);
      });
    };
    if (algo === 'v2020') {
      it(`${key}: FastCDC.cutWithHash`, () => check(cutAll(data, params)));
      it(`${key}: chunkBuffer`, () => {
        expect(chunkBuffer(data, params)).toEqual(group.map((r) => ({ offset: r.offset, length: r.length })));
      });
      it(`${key}: reference chunker agrees`, () => check(referenceChunks('v2020', data, params)));
    } else {
      // No v2016 chunker in snapyard; the rows still check the reference
      // implementation (and so GEAR/MASKS) that the random tests rely on.
      it(`${key}: reference chunker (v2016)`, () => check(referenceChunks('v2016', data, params)));
    }
  }
});

describe('chunkStream', () => {
  const cases = [...groups.values()].filter((g) => g[0]!.algo === 'v2020');
  for (const size of [1, 7, 100_000, Infinity]) {
    it(`matches the vectors when fed ${size === Infinity ? 'whole' : `${size}-byte pieces`}`, async () => {
      for (const group of cases) {
        const data = input(group[0]!.input);
        const chunks = await streamAll(pieces(data, Math.min(size, data.length)), group[0]!.params);
        expect(chunks.map((c) => ({ offset: c.offset, length: c.length }))).toEqual(
          group.map((r) => ({ offset: r.offset, length: r.length })),
        );
        // data is a private copy that outlives the generator's later steps
        for (const c of chunks) expect(c.data.equals(data.subarray(c.offset, c.offset + c.length))).toBe(true);
      }
    });
  }

  it('copes with a source that reuses its buffer and yields empty pieces', async () => {
    const data = input('synthetic-8MiB.bin').subarray(0, 3 << 20);
    const r = prng(7);
    async function* reusing() {
      const scratch = Buffer.alloc(300_000);
      for (let i = 0; i < data.length; ) {
        const n = Math.min(r() % 300_000, data.length - i);
        data.copy(scratch, 0, i, i + n);
        yield scratch.subarray(0, n);
        scratch.fill(0xa5);
        yield new Uint8Array(0);
        i += n;
      }
    }
    const chunks = await streamAll(reusing());
    expect(chunks.map((c) => ({ offset: c.offset, length: c.length }))).toEqual(chunkBuffer(data));
    for (const c of chunks) expect(c.data.equals(data.subarray(c.offset, c.offset + c.length))).toBe(true);
  });

  it('rejects non-Uint8Array pieces', async () => {
    async function* bad() { yield 'text' as unknown as Uint8Array; }
    await expect(streamAll(bad())).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('random data against the reference', () => {
  const paramSets: FastCDCParams[] = [
    { minSize: 64, avgSize: 256, maxSize: 1024 },
    { minSize: 65, avgSize: 300, maxSize: 1025 },
    { minSize: 1024, avgSize: 1024, maxSize: 1024 },
    { minSize: 777, avgSize: 3001, maxSize: 9999 },
    { minSize: 4096, avgSize: 16384, maxSize: 65535 },
    // odd min: FastCDC.cut copies min+avg bytes first, an odd count, then more
    { minSize: 1001, avgSize: 40_000, maxSize: 300_001 },
    DEFAULT_FASTCDC,
  ];
  const random = randomBytes(3 << 20, 42);
  // low-entropy data: long runs that only max-size cuts can split
  const runs = Buffer.concat([randomBytes(50_000, 1), Buffer.alloc(700_001, 3), randomBytes(123_457, 2)]);
  for (const params of paramSets) {
    it(`${params.minSize}/${params.avgSize}/${params.maxSize}`, async () => {
      for (const data of [random, runs]) {
        const want = referenceChunks('v2020', data, params);
        expect(cutAll(data, params)).toEqual(want);
        const r = prng(params.maxSize);
        const streamed = await streamAll(pieces(data, () => 1 + (r() % (2 * params.maxSize + 3))), params);
        expect(streamed.map((c) => ({ offset: c.offset, length: c.length }))).toEqual(
          want.map(({ offset, length }) => ({ offset, length })),
        );
      }
    });
  }

  it('cut honours `end` and a non-zero `start`', () => {
    const cdc = new FastCDC(DEFAULT_FASTCDC);
    const data = random.subarray(1000, 1000 + 500_000);
    const want = referenceChunks('v2020', data, DEFAULT_FASTCDC)[0]!;
    expect(cdc.cutWithHash(random, 1000, 1000 + 500_000)).toEqual({ length: want.length, hash: want.hash });
    expect(cdc.cut(random, 1000, 1000 + 10_000)).toBe(10_000); // <= min: the rest is one chunk
  });
});

describe('edge cases and validation', () => {
  it('empty input yields no chunks', async () => {
    expect(chunkBuffer(new Uint8Array(0))).toEqual([]);
    expect(await streamAll(pieces(new Uint8Array(0), 1))).toEqual([]);
    async function* empties() { yield new Uint8Array(0); yield new Uint8Array(0); }
    expect(await streamAll(empties())).toEqual([]);
  });

  it('input shorter than min yields one chunk with hash 0', async () => {
    const data = randomBytes(DEFAULT_FASTCDC.minSize - 1, 9);
    expect(chunkBuffer(data)).toEqual([{ offset: 0, length: data.length }]);
    expect(new FastCDC().cutWithHash(data, 0, data.length)).toEqual({ length: data.length, hash: 0n });
    const chunks = await streamAll(pieces(data, 1000));
    expect(chunks.length).toBe(1);
    expect(chunks[0]!.data.equals(data)).toBe(true);
  });

  it('validates parameters like fastcdc-rs, plus min <= avg <= max', () => {
    expect(new FastCDC().params).toEqual(DEFAULT_FASTCDC);
    expect(new FastCDC({ minSize: 64, avgSize: 256, maxSize: 1024 }).params.minSize).toBe(64);
    expect(new FastCDC({ minSize: 1_048_576, avgSize: 4_194_304, maxSize: 16_777_216 }).params.maxSize).toBe(16_777_216);
    const bad: FastCDCParams[] = [
      { minSize: 63, avgSize: 256, maxSize: 1024 },
      { minSize: 1_048_577, avgSize: 4_194_304, maxSize: 16_777_216 },
      { minSize: 64, avgSize: 255, maxSize: 1024 },
      { minSize: 64, avgSize: 4_194_305, maxSize: 16_777_216 },
      { minSize: 64, avgSize: 256, maxSize: 1023 },
      { minSize: 64, avgSize: 256, maxSize: 16_777_217 },
      { minSize: 512, avgSize: 256, maxSize: 1024 },
      { minSize: 64, avgSize: 4096, maxSize: 2048 },
      { minSize: 64.5, avgSize: 256, maxSize: 1024 },
      { minSize: 64, avgSize: Number.NaN, maxSize: 1024 },
      { minSize: 64, avgSize: 256 } as FastCDCParams,
    ];
    for (const p of bad) {
      expectInvalid(() => new FastCDC(p));
      expectInvalid(() => chunkBuffer(new Uint8Array(10), p));
    }
    expectInvalid(() => new FastCDC(null as unknown as FastCDCParams));
  });

  it('rejects bad cut ranges', () => {
    const cdc = new FastCDC();
    const buf = new Uint8Array(100);
    expectInvalid(() => cdc.cut(buf, -1, 10));
    expectInvalid(() => cdc.cut(buf, 20, 10));
    expectInvalid(() => cdc.cut(buf, 0, 101));
    expectInvalid(() => cdc.cut(buf, 0.5, 10));
    expectInvalid(() => cdc.cut([1, 2] as unknown as Uint8Array, 0, 2));
  });

  it('stream parameter errors surface on first use', async () => {
    await expect(streamAll(pieces(new Uint8Array(10), 1), { minSize: 1, avgSize: 2, maxSize: 3 })).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});

import { afterEach, describe, expect, test, vi } from 'vitest';
import binding from 'zstd-napi/binding.js';
import { compressWithDict, decompressWithDict, dictBytes, ZSTD_DICT_MAGIC } from '../storage/delta/dict-codec.js';
import { SnapyardError } from '../storage/errors.js';
import { decodeSketch, encodeSketch, MAX_DF, ResemblanceIndex, sketch } from '../storage/delta/resemblance.js';
import { prng } from './helpers/oci.js';

const KiB = 1024;

/** `n` pseudo-random chunks of 16-128 KiB (seeded, reproducible). */
function randomChunks(n: number, seed: number): Buffer[] {
  return Array.from({ length: n }, (_, i) => prng(16 * KiB + ((i * 7919) % 112) * KiB, seed + i));
}

function indexOf(chunks: Buffer[]): ResemblanceIndex {
  const idx = new ResemblanceIndex();
  chunks.forEach((c, id) => idx.add(id, sketch(c)));
  return idx;
}

/** `src` with `count` bytes overwritten at seeded positions and one 300-byte run replaced. */
function edited(src: Buffer, count: number, seed: number): Buffer {
  const out = Buffer.from(src);
  const noise = prng(2 * count + 300, seed);
  for (let i = 0; i < count; i++) {
    const at = (noise.readUInt16LE(2 * i) * 7 + i * 977) % out.length;
    out[at] = out[at]! ^ 0x5a;
  }
  noise.copy(out, Math.floor(out.length / 3), 2 * count);
  return out;
}

describe('resemblance sketch', () => {
  test('is deterministic, sorted, distinct and small', () => {
    const c = prng(64 * KiB, 42);
    const s = sketch(c);
    expect(sketch(Buffer.from(c))).toEqual(s);
    for (let i = 1; i < s.length; i++) expect(s[i]!).toBeGreaterThan(s[i - 1]!);
    expect(s.length).toBeGreaterThan(30);
    expect(s.length).toBeLessThan(120);
    const enc = encodeSketch(s);
    expect(enc.length).toBeLessThan(4 * s.length + 8);
    expect(decodeSketch(enc)).toEqual(s);
  });

  test('zero, constant and short-period filler gives an empty sketch', () => {
    expect(sketch(Buffer.alloc(256 * KiB)).length).toBe(0);
    expect(sketch(Buffer.alloc(64 * KiB, 0xff)).length).toBe(0);
    expect(sketch(Buffer.alloc(64 * KiB, Buffer.from([0x00, 0xff]))).length).toBe(0);
    expect(sketch(Buffer.alloc(64 * KiB, Buffer.from('MZ\x90\x00\x03\x00\x00\x00'))).length).toBe(0);
    expect(sketch(Buffer.alloc(10)).length).toBe(0);
    // Every byte value, and 1600 random patterns of period 2..8 (~7000 phases:
    // unfiltered, about 1 in 1024 would be an anchor).
    for (let b = 0; b < 256; b++) expect(sketch(Buffer.alloc(512, b)).length).toBe(0);
    for (let p = 2; p <= 8; p++) {
      for (let seed = 1; seed <= 230; seed++) expect(sketch(Buffer.alloc(512, prng(p, seed * 10 + p))).length).toBe(0);
    }
  });

  test('decodeSketch refuses malformed input with a SnapyardError', () => {
    const good = encodeSketch(sketch(prng(64 * KiB, 5)));
    const bad = [Buffer.alloc(0), Buffer.from([9, 10]), Buffer.from([1, 9]), good.subarray(0, good.length - 1), Buffer.from([1, 10, 5, 0]),
      Buffer.from([1, 10, 0xff, 0xff, 0xff, 0xff, 0x7f])];
    for (const b of bad) expect(() => decodeSketch(b)).toThrow(SnapyardError);
  });

  test('decodeSketch: values up to 2^32 - 1 round trip (five-byte varints); past u32 is refused', () => {
    const edge = Uint32Array.from([0, 1, 127, 128, 2 ** 28 - 1, 2 ** 28, 2 ** 31, 0xfffffffe, 0xffffffff]);
    expect(decodeSketch(encodeSketch(edge))).toEqual(edge);
    expect(decodeSketch(encodeSketch(Uint32Array.from([0xffffffff])))).toEqual(Uint32Array.from([0xffffffff]));
    // 2^32 as one varint (the fifth byte's bit 4), and a sum past u32 (0xffffffff + 1).
    expect(() => decodeSketch(Buffer.from([1, 10, 0x80, 0x80, 0x80, 0x80, 0x10]))).toThrow(SnapyardError);
    expect(() => decodeSketch(Buffer.from([1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]))).toThrow(SnapyardError);
    expect(decodeSketch(Buffer.from([1, 10]))).toEqual(new Uint32Array(0));
  });
});

describe('ResemblanceIndex', () => {
  const held = randomChunks(300, 1000);
  const idx = indexOf(held);

  test('a chunk edited in a few places finds its original first among 300', () => {
    for (const id of [0, 137, 299]) {
      expect(idx.similar(sketch(edited(held[id]!, 12, id)), 3)[0]).toBe(id);
    }
  });

  test('sized for its values up front (no doubling on the way), it answers exactly as one that grew', () => {
    const sketches = held.map((c) => sketch(c));
    const sized = new ResemblanceIndex(sketches.reduce((n, s) => n + s.length, 0));
    sketches.forEach((s, id) => sized.add(id, s));
    sized.trim();
    for (const id of [0, 1, 42, 137, 298, 299]) {
      const q = sketch(edited(held[id]!, 40, id + 1));
      expect(sized.similar(q, 3)).toEqual(idx.similar(q, 3));
    }
    expect(sized.size).toBe(idx.size);
  });

  test('shifted content (bytes inserted at the front, tail cut) still finds its original', () => {
    const src = held[50]!;
    const shifted = Buffer.concat([prng(777, 9), src.subarray(0, src.length - 5000)]);
    expect(idx.similar(sketch(shifted), 1)).toEqual([50]);
  });

  test('a chunk made of two held chunks gets both, not near-copies of one', () => {
    const both = new ResemblanceIndex();
    const a = held[10]!;
    const b = held[20]!;
    both.add(1, sketch(a));
    both.add(2, sketch(Buffer.concat([a.subarray(0, a.length - 100), prng(100, 3)]))); // near-copy of a
    both.add(3, sketch(b));
    const mixed = Buffer.concat([a.subarray(0, a.length / 2), b.subarray(b.length / 2)]);
    const picks = both.similar(sketch(mixed), 2);
    expect(picks).toHaveLength(2);
    expect(picks).toContain(3);
    expect(picks.filter((id) => id === 1 || id === 2)).toHaveLength(1);
  });

  test('zeros and filler match nothing, and are never matched', () => {
    expect(idx.similar(sketch(Buffer.alloc(128 * KiB)))).toEqual([]);
    const withFiller = new ResemblanceIndex();
    withFiller.add(1, sketch(Buffer.alloc(64 * KiB)));
    withFiller.add(2, sketch(Buffer.alloc(64 * KiB, 0xff)));
    withFiller.add(3, sketch(Buffer.concat([Buffer.alloc(60 * KiB), prng(4 * KiB, 77)])));
    const query = Buffer.concat([Buffer.alloc(60 * KiB), prng(4 * KiB, 78)]); // same zeros, other data
    expect(withFiller.similar(sketch(query))).toEqual([]);
    expect(withFiller.similar(sketch(prng(64 * KiB, 79)))).toEqual([]);
  });

  test('ties go to the smaller id; minVotes and k are honoured', () => {
    const t = new ResemblanceIndex();
    const c = prng(64 * KiB, 11);
    t.add(9, sketch(c));
    t.add(4, sketch(c));
    t.add(6, sketch(c.subarray(0, 8 * KiB)));
    expect(t.similar(sketch(c), 3)).toEqual([4]); // 9 and 6 add no anchor 4 lacks
    expect(t.similar(sketch(c), 0)).toEqual([]);
    const few = sketch(c.subarray(0, 6 * KiB));
    expect(few.length).toBeGreaterThan(0);
    expect(t.similar(few, 3, few.length + 1)).toEqual([]);
    expect(t.similar(few, 3, few.length)).toEqual([4]);
  });

  test(`an anchor held by more than ${MAX_DF} chunks gets no vote`, () => {
    const hub = new ResemblanceIndex();
    const common = prng(8 * KiB, 123);
    for (let i = 0; i <= MAX_DF; i++) hub.add(i, sketch(Buffer.concat([prng(32 * KiB, 500 + i), common])));
    expect(sketch(common).length).toBeGreaterThan(0);
    expect(hub.similar(sketch(common))).toEqual([]);
    const own = prng(32 * KiB, 500 + 7);
    expect(hub.similar(sketch(Buffer.concat([own, common])))[0]).toBe(7);
  });
});

describe('dictionary codec', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  test('round trip: random data with a random dictionary, and an edited copy of the dictionary', () => {
    const dict = prng(192 * KiB, 1);
    const rnd = prng(64 * KiB, 2);
    const p = compressWithDict(rnd, dict, 3);
    expect(decompressWithDict(p, dict, rnd.length).equals(rnd)).toBe(true);
    const near = edited(dict.subarray(64 * KiB, 192 * KiB), 20, 3);
    for (const level of [1, 3, 19]) {
      const q = compressWithDict(near, dict, level);
      expect(q.length).toBeLessThan(near.length / 50);
      expect(decompressWithDict(q, dict, near.length).equals(near)).toBe(true);
    }
    expect(compressWithDict(near, Buffer.alloc(0), 3).length).toBeGreaterThan(near.length * 0.99);
  });

  test('round trip: compressible data, empty data, dictionary far back in a 768 KiB dictionary', () => {
    const text = Buffer.from('snapyard resemblance dictionary '.repeat(4000));
    const dict = Buffer.concat([prng(100 * KiB, 4), text.subarray(0, 50_000)]);
    const p = compressWithDict(text, dict, 3);
    expect(decompressWithDict(p, dict, text.length).equals(text)).toBe(true);
    expect(decompressWithDict(compressWithDict(Buffer.alloc(0), dict, 3), dict, 0).length).toBe(0);
    const target = prng(256 * KiB, 6);
    const big = Buffer.concat([target, prng(512 * KiB, 7)]); // the match is 768 KiB back from the data
    const q = compressWithDict(target, big, 3);
    expect(q.length).toBeLessThan(4 * KiB);
    expect(decompressWithDict(q, big, target.length).equals(target)).toBe(true);
  });

  test('a dictionary that begins with the zstd dictionary magic is still raw content', () => {
    const content = prng(64 * KiB, 8);
    const dict = Buffer.concat([Buffer.alloc(4), content]);
    dict.writeUInt32LE(ZSTD_DICT_MAGIC, 0);
    const p = compressWithDict(content, dict, 3);
    expect(p.length).toBeLessThan(KiB);
    expect(decompressWithDict(p, dict, content.length).equals(content)).toBe(true);
    // a dictionary that is only the magic and a few bytes
    const tiny = Buffer.from([0x37, 0xa4, 0x30, 0xec, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(decompressWithDict(compressWithDict(content, tiny, 3), tiny, content.length).equals(content)).toBe(true);
    expect(dictBytes(dict).length).toBe(dict.length + 1);
    expect(dictBytes(content)).toBe(content);
  });

  test('hostile payloads are CHUNK_CORRUPT and allocate no more than rawLength', () => {
    const dict = prng(64 * KiB, 9);
    const raw = Buffer.concat([dict.subarray(0, 30 * KiB), prng(10 * KiB, 10)]);
    const good = compressWithDict(raw, dict, 3);
    const zeros = Buffer.alloc(64 << 20);
    const bomb = Buffer.alloc(binding.compressBound(zeros.length));
    const bombPayload = bomb.subarray(0, new binding.CCtx().compress(bomb, zeros, 3)); // 64 MiB of zeros, declared
    const noSize = Buffer.alloc(1000);
    const cctx = new binding.CCtx();
    cctx.setParameter(binding.CParameter.contentSizeFlag, 0);
    const [, produced] = cctx.compressStream2(noSize, raw.subarray(0, 100), binding.EndDirective.end);
    const cases: Array<[Uint8Array, number]> = [
      [good.subarray(0, good.length - 3), raw.length],
      [good.subarray(0, 5), raw.length],
      [good, raw.length - 1],
      [good, raw.length + 1],
      [Buffer.concat([good, good]), raw.length],
      [prng(5000, 11), raw.length],
      [Buffer.alloc(0), 0],
      [bombPayload, 4096],
      [noSize.subarray(0, produced), 100],
    ];
    const sizes: number[] = [];
    const real = Buffer.allocUnsafe.bind(Buffer);
    vi.spyOn(Buffer, 'allocUnsafe').mockImplementation((n: number) => {
      sizes.push(n);
      return real(n);
    });
    for (const [payload, len] of cases) {
      sizes.length = 0;
      let err: unknown;
      try {
        decompressWithDict(payload, dict, len);
      } catch (e) {
        err = e;
      }
      expect(err, `payload of ${payload.length} bytes, rawLength ${len}`).toBeInstanceOf(SnapyardError);
      expect((err as SnapyardError).code).toBe('CHUNK_CORRUPT');
      expect(Math.max(0, ...sizes)).toBeLessThanOrEqual(len);
    }
    const flipped = Buffer.from(good);
    flipped[flipped.length - 10] = flipped[flipped.length - 10]! ^ 0xff;
    let out: Buffer | undefined;
    try {
      out = decompressWithDict(flipped, dict, raw.length);
    } catch (e) {
      expect(e).toBeInstanceOf(SnapyardError);
    }
    if (out) expect(out.equals(raw)).toBe(false); // no checksum: the chunk digest check catches it
    expect(() => decompressWithDict(good, dict, -1)).toThrow(SnapyardError);
    expect(() => compressWithDict(raw, Buffer.alloc(65 << 20), 3)).toThrow(SnapyardError);
  });
});

/**
 * Reused read and codec buffers (storage/chunks/spare-buffers.ts): a task
 * holds the smallest size that fits it, buffers given back are handed out
 * again by size, and no more than the budget waits for reuse.
 */
import { describe, expect, test } from 'vitest';
import { SpareBuffers } from '../storage/chunks/spare-buffers.js';

const KiB = 1024;
const LARGEST = 2 * 1024 * KiB + 256 * KiB;

describe('spare buffers', () => {
  test('sizes: powers of two from 64 KiB, then the largest; nothing above it', () => {
    const s = new SpareBuffers(LARGEST, 4 * LARGEST);
    expect(s.sizeFor(0)).toBe(64 * KiB);
    expect(s.sizeFor(64 * KiB)).toBe(64 * KiB);
    expect(s.sizeFor(64 * KiB + 1)).toBe(128 * KiB);
    expect(s.sizeFor(100 * KiB)).toBe(128 * KiB);
    expect(s.sizeFor(2048 * KiB)).toBe(2048 * KiB);
    expect(s.sizeFor(2048 * KiB + 1)).toBe(LARGEST);
    expect(s.sizeFor(LARGEST)).toBe(LARGEST);
    expect(s.sizeFor(LARGEST + 1)).toBe(0);
    expect(s.take(LARGEST + 1)).toBeNull();
    expect(s.take(100 * KiB)!.byteLength).toBe(128 * KiB);
  });

  test('a buffer given back is taken again for a task of its size; other sizes and foreign buffers are not kept; the budget caps what waits', () => {
    const s = new SpareBuffers(LARGEST, 2 * LARGEST);
    const a = s.take(100 * KiB)!;
    s.give(a);
    expect(s.take(120 * KiB)).toBe(a);
    expect(s.take(120 * KiB)).not.toBe(a); // taken: a new one
    s.give(a);
    s.give(a); // twice: kept once
    expect(s.take(128 * KiB)).toBe(a);
    expect(s.take(128 * KiB)).not.toBe(a);
    const odd = new ArrayBuffer(100 * KiB);
    s.give(odd);
    expect(s.take(100 * KiB)).not.toBe(odd);
    const big = [s.take(LARGEST)!, s.take(LARGEST)!, s.take(LARGEST)!];
    for (const b of big) s.give(b);
    expect(s.take(LARGEST)).toBe(big[1]);
    expect(s.take(LARGEST)).toBe(big[0]);
    expect(s.take(LARGEST)).not.toBe(big[2]); // over the budget: left to the GC
  });
});

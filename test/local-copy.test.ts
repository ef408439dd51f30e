/**
 * A lazy mount's local copy (client/lazy/local-copy.ts): what was answered,
 * kept as plain bytes in one sparse file that is removed as soon as it is
 * opened, within a byte budget.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { LocalCopy } from '../client/lazy/local-copy.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-local-copy-');
const KiB = 1024;
const MiB = 1024 * KiB;

describe('lazy mount: the local copy', () => {
  test('ranges kept are read back byte-exact, small ones on the event loop and large ones on libuv threads; a range not all kept is not read; nothing is left in the folder', async () => {
    const dir = tmp();
    const copy = new LocalCopy(dir, 64 * MiB);
    try {
      const small = randomBytes(48 * KiB);
      const large = randomBytes(3 * MiB);
      const smallAsKept = Buffer.from(small);
      copy.keep(100 * MiB, small); // sparse: far into the file
      copy.keep(8 * MiB, large);
      small.fill(0); // kept as it was when handed over (copied), not as the caller's buffer is later
      await copy.settled();
      expect(copy.bytes).toBe(48 * KiB + 3 * MiB);
      expect(readdirSync(dir)).toEqual([]); // removed once opened: only this process holds it
      const got = Buffer.alloc(48 * KiB);
      expect(await copy.read(100 * MiB, got)).toBe(true);
      expect(got.equals(smallAsKept)).toBe(true);
      const whole = Buffer.alloc(3 * MiB);
      expect(await copy.read(8 * MiB, whole)).toBe(true);
      expect(whole.equals(large)).toBe(true);
      const inner = Buffer.alloc(4 * KiB);
      expect(await copy.read(8 * MiB + 12345, inner)).toBe(true);
      expect(inner.equals(large.subarray(12345, 12345 + 4 * KiB))).toBe(true);
      // Over the end of a kept range, or where nothing was kept: not read.
      expect(await copy.read(8 * MiB + 3 * MiB - KiB, Buffer.alloc(2 * KiB))).toBe(false);
      expect(await copy.read(0, Buffer.alloc(KiB))).toBe(false);
      expect(copy.reads).toBe(3);
      // Adjacent ranges merge: a read across both is answered.
      const next = randomBytes(KiB);
      copy.keep(11 * MiB, next);
      await copy.settled();
      const across = Buffer.alloc(2 * KiB);
      expect(await copy.read(11 * MiB - KiB, across)).toBe(true);
      expect(across.equals(Buffer.concat([large.subarray(3 * MiB - KiB), next]))).toBe(true);
    } finally {
      copy.close();
    }
    // Closed: nothing held, nothing read.
    expect(copy.bytes).toBe(0);
    expect(await copy.read(8 * MiB, Buffer.alloc(KiB))).toBe(false);
  });

  test('beyond its budget nothing more is kept (what is kept stays)', async () => {
    const copy = new LocalCopy(tmp(), 1 * MiB);
    try {
      const a = randomBytes(768 * KiB);
      copy.keep(0, a);
      await copy.settled();
      copy.keep(MiB, randomBytes(512 * KiB)); // 768 KiB + 512 KiB > 1 MiB
      await copy.settled();
      expect(copy.bytes).toBe(768 * KiB);
      expect(await copy.read(MiB, Buffer.alloc(KiB))).toBe(false);
      const got = Buffer.alloc(768 * KiB);
      expect(await copy.read(0, got)).toBe(true);
      expect(got.equals(a)).toBe(true);
    } finally {
      copy.close();
    }
  });
});

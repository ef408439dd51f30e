/**
 * A Bloom filter over sha256 digests (which are uniformly random, so their own
 * bytes serve as the k hash functions). "Definitely absent" answers let a
 * store skip an index lookup for new chunks; "maybe present" ones are checked.
 * Grows by rebuilding: the owner re-adds everything when `full()` says so.
 */
export class DigestBloom {
  private bits: Uint32Array;
  private mask: number;
  private count = 0;
  private readonly k = 6;

  constructor(expected = 1 << 20) {
    const nbits = nextPow2(Math.max(1 << 16, expected * 12));
    this.bits = new Uint32Array(nbits >>> 5);
    this.mask = nbits - 1;
  }

  /** `raw` is the 32-byte digest. */
  add(raw: Uint8Array): void {
    for (let i = 0; i < this.k; i++) {
      const h = readU32(raw, i * 4) & this.mask;
      this.bits[h >>> 5]! |= 1 << (h & 31);
    }
    this.count++;
  }

  mayHave(raw: Uint8Array): boolean {
    for (let i = 0; i < this.k; i++) {
      const h = readU32(raw, i * 4) & this.mask;
      if ((this.bits[h >>> 5]! & (1 << (h & 31))) === 0) return false;
    }
    return true;
  }

  /** True when the false-positive rate would climb (more than 1 item per 12 bits). */
  full(): boolean {
    return this.count * 12 > this.mask + 1;
  }

  get size(): number {
    return this.count;
  }
}

function readU32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

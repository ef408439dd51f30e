import { createHash, type Hash } from 'node:crypto';
import { SnapyardError } from './errors.js';

/**
 * OCI digests. snapyard names every blob, chunk and manifest by `sha256:<64 hex>`
 * (blobs and manifests may also be addressed by `sha512:<128 hex>`).
 * The grammar is the distribution-spec's: algorithm ":" encoded.
 */
export const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const SHA256_HEX = /^[a-f0-9]{64}$/;

export type Digest = `sha256:${string}`;
/**
 * A sha512 digest: accepted wherever the OCI API takes a digest, as another
 * name (an alias, storage/meta/digest-aliases.ts) of content snapyard stores
 * under its sha256. Chunks and indexes are always sha256.
 */
export type Sha512Digest = `sha512:${string}`;
export type AnyDigest = Digest | Sha512Digest;
const SHA512_HEX = /^[a-f0-9]{128}$/;

/** True for a digest snapyard can address (sha256, lower-case hex). */
export function isDigest(s: string): s is Digest {
  return s.length === 71 && s.startsWith('sha256:') && SHA256_HEX.test(s.slice(7));
}

export function isSha512Digest(s: string): s is Sha512Digest {
  return s.length === 135 && s.startsWith('sha512:') && SHA512_HEX.test(s.slice(7));
}

/** sha256 or sha512, lower-case hex. */
export function isAnyDigest(s: string): s is AnyDigest {
  return isDigest(s) || isSha512Digest(s);
}

export function sha512(data: Uint8Array): Sha512Digest {
  return `sha512:${createHash('sha512').update(data).digest('hex')}`;
}

/** sha512 of a stream of pieces. */
export async function sha512OfStream(source: AsyncIterable<Uint8Array>): Promise<Sha512Digest> {
  const h = createHash('sha512');
  for await (const piece of source) h.update(piece);
  return `sha512:${h.digest('hex')}`;
}

/**
 * Validates a digest string; throws DIGEST_INVALID for anything that is not
 * well-formed or uses an algorithm snapyard does not serve.
 */
export function parseDigest(s: string): Digest {
  if (isDigest(s)) return s;
  if (!DIGEST_GRAMMAR.test(s)) throw new SnapyardError('DIGEST_INVALID', `invalid digest ${JSON.stringify(s)}`);
  throw new SnapyardError('DIGEST_INVALID', `unsupported digest ${JSON.stringify(s)}: only sha256 with 64 lower-case hex digits is accepted`);
}

export function hexOf(d: Digest): string {
  return d.slice(7);
}

export function digestFromHex(hex: string): Digest {
  return `sha256:${hex}`;
}

export function digestFromRaw(raw: Uint8Array): Digest {
  return `sha256:${Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('hex')}`;
}

export function rawOf(d: Digest): Buffer {
  return Buffer.from(hexOf(d), 'hex');
}

export function sha256(data: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function sha256Raw(data: Uint8Array): Buffer {
  return createHash('sha256').update(data).digest();
}

/** Incremental digest of a stream of pieces, with the byte count. */
export interface StreamDigester {
  readonly size: number;
  /** Takes a piece (copied or hashed before this returns); a returned promise asks the caller to wait. */
  update(piece: Uint8Array): void | Promise<void>;
  digest(): Promise<Digest>;
}

/** sha256 (a blob's digest, `sha256:<hex>`) or md5 (an S3 put's Content-MD5: `md5:<hex>`, not a Digest). */
export type HashAlgorithm = 'sha256' | 'md5';

/** Incremental digest of a stream of pieces, with the byte count. */
export class Digester {
  private readonly hash: Hash;
  size = 0;
  constructor(private readonly algorithm: HashAlgorithm = 'sha256') {
    this.hash = createHash(algorithm);
  }
  update(piece: Uint8Array): void {
    this.hash.update(piece);
    this.size += piece.byteLength;
  }
  digest(): Digest {
    return `${this.algorithm}:${this.hash.digest('hex')}` as Digest;
  }
}

/** The plain, same-thread StreamDigester. */
export function localDigester(algorithm: HashAlgorithm = 'sha256'): StreamDigester {
  const d = new Digester(algorithm);
  return {
    get size() {
      return d.size;
    },
    update: (p) => d.update(p),
    digest: async () => d.digest(),
  };
}

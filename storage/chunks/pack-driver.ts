import { SnapyardError } from '../errors.js';

/** Where pack bytes live: a local directory or an S3 bucket. A pack is immutable once put. */
export interface PackDriver {
  /** For logs: "file:/data/chunks/packs", "s3://bucket/prefix". */
  readonly location: string;
  /** Stores a complete pack from a local file; readable only once whole. Fails with SnapyardError CONFLICT if `name` exists already (S3: PutObject If-None-Match: *; local: link/rename that does not replace). Verifies the upload (Content-MD5 on S3). */
  put(name: string, file: string, known?: PackFacts): Promise<void>;
  /** `length` bytes at `offset` of a pack (S3: ranged GET). NOT_FOUND when the pack is missing; RANGE_INVALID when the range runs past its end. */
  get(name: string, offset: number, length: number, hint?: ReadHint): Promise<Buffer>;
  /** Whether a range is on the local disk (a cache in front of the bucket: pack-file-cache.ts); reads of it cost no request. */
  holds?(name: string, offset: number, length: number): boolean;
  /** Deletes packs; missing ones are not an error (S3: DeleteObjects in batches of 1000). */
  delete(names: string[]): Promise<void>;
  /** Every pack with its size (S3: ListObjectsV2, paginated). */
  list(): AsyncIterable<{ name: string; size: number }>;
  /** Requests made and bytes moved since start (for the issue's "S3 requests per GB" figure). */
  stats(): PackDriverStats;
  close(): Promise<void>;
}

/** What a reader expects of the bytes it asks for (drivers may ignore it). */
export interface ReadHint {
  /**
   * They will be asked for again (records read at random, delta encoding's
   * dictionaries): a local cache in front of the bucket (pack-file-cache.ts)
   * keeps them on its disk. A stream's reads (a blob GET, compaction) do not set it.
   */
  keep?: boolean;
}

/**
 * What the writer of a pack file knows of it (the spool hashes records as it
 * appends them): spares the driver a read of the whole file before the put.
 */
export interface PackFacts {
  md5: Buffer;
  size: number;
}

/** Requests (S3: HTTP requests, retries included; local: operations) and payload bytes. */
export interface PackDriverStats {
  puts: number;
  gets: number;
  deletes: number;
  lists: number;
  bytesPut: number;
  bytesGot: number;
}

export function emptyStats(): PackDriverStats {
  return { puts: 0, gets: 0, deletes: 0, lists: 0, bytesPut: 0, bytesGot: 0 };
}

/** What a pack may be called: one path segment, so it maps to a file name or an object key as it is. */
export const PACK_DRIVER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;

/** Files (local) and objects (S3) of packs end with this; others in the directory or prefix are not packs. */
export const PACK_SUFFIX = '.pack';

export function checkPackName(name: string): void {
  if (typeof name !== 'string' || !PACK_DRIVER_NAME.test(name)) {
    throw new SnapyardError('INVALID_ARGUMENT', `bad pack name ${JSON.stringify(name)}`);
  }
}

export function checkRange(name: string, offset: number, length: number): void {
  checkPackName(name);
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new SnapyardError('INVALID_ARGUMENT', `bad range offset=${offset} length=${length} of pack ${name}`);
  }
}

export function rangePastEnd(name: string, offset: number, length: number, size?: number): SnapyardError {
  return new SnapyardError('RANGE_INVALID', `range ${offset}+${length} runs past the end of pack ${name}${size === undefined ? '' : ` (${size} bytes)`}`, {
    detail: { pack: name, offset, length, size },
  });
}

export function packMissing(name: string, location: string, cause?: unknown): SnapyardError {
  return new SnapyardError('NOT_FOUND', `pack ${name} is not in ${location}`, cause === undefined ? undefined : { cause });
}

export function packExists(name: string, location: string): SnapyardError {
  return new SnapyardError('CONFLICT', `pack ${name} already exists in ${location}`);
}

/** Runs at most `limit` tasks at once; the others wait in order. */
export class Semaphore {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new SnapyardError('INVALID_ARGUMENT', `concurrency must be >= 1, got ${limit}`);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((wake) => this.waiting.push(wake));
    else this.active++;
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

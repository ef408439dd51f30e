import { closeSync, openSync, readSync } from 'node:fs';
import { Qcow2Image } from '../qcow2/reader.js';
import type { Digest } from '../digest.js';
import { ChunkCorruptError } from '../errors.js';
import type { ChunkCodec } from './chunk-codec.js';
import { encodeRecords, type Records } from './remote-chunk-spool.js';

/**
 * Chunk bytes read straight out of a local file by the thread that encodes
 * them (a push's codec workers): no copy through the event loop. A chunk is a
 * list of ranges, each [kind, offset, length]: RANGE_FILE is the file's own
 * bytes, RANGE_GUEST a qcow2 image's guest view (zeros where it holds none).
 */
export const RANGE_FILE = 0;
export const RANGE_GUEST = 1;

/** L2 tables a reader keeps per image: each covers 512 MiB of guest space with 64 KiB clusters. */
const KEPT_TABLES = 8;

interface Open {
  fd: number;
  img: Qcow2Image | null;
}

/** Open files by path, kept until close(); owned by one thread. */
export class FileRangeReader {
  private readonly files = new Map<string, Open>();

  /**
   * Reads the ranges ranges[from .. to) (triples) of `path` into `into` at
   * `at`; the bytes read, or -1 when the file ended first (it changed).
   */
  read(path: string, ranges: ArrayLike<number>, from: number, to: number, into: Buffer, at: number): number {
    const f = this.open(path);
    const start = at;
    for (let k = from; k + 2 < to; k += 3) {
      const kind = ranges[k]!;
      const offset = ranges[k + 1]!;
      const length = ranges[k + 2]!;
      const target = into.subarray(at, at + length);
      if (kind === RANGE_GUEST) {
        f.img ??= Qcow2Image.open(path, { cachedTables: KEPT_TABLES });
        f.img.readGuestInto(target, offset, undefined);
      } else {
        for (let got = 0; got < length; ) {
          const n = readSync(f.fd, target, got, length - got, offset + got);
          if (n === 0) return -1;
          got += n;
        }
      }
      at += length;
    }
    return at - start;
  }

  private open(path: string): Open {
    let f = this.files.get(path);
    if (!f) {
      f = { fd: openSync(path, 'r'), img: null };
      this.files.set(path, f);
    }
    return f;
  }

  close(): void {
    for (const f of this.files.values()) {
      f.img?.close();
      closeSync(f.fd);
    }
    this.files.clear();
  }
}

/** Chunks of one file: chunk i's ranges are the triples ranges[ends[i-1] .. ends[i]) (ends[-1] = 0). */
export interface FileChunks {
  path: string;
  ranges: number[];
  ends: number[];
  lengths: number[];
  digests: Digest[];
}

/**
 * The chunks read from their file (into `scratch`, grown as needed) and
 * encoded into records, not hashed again (whoever stores them does).
 * CHUNK_CORRUPT names the first chunk the file no longer holds in full.
 */
export function encodeFileChunks(codec: ChunkCodec, reader: FileRangeReader, t: FileChunks, scratch: { buf: Buffer }): Records {
  let total = 0;
  for (const n of t.lengths) total += n;
  if (scratch.buf.byteLength < total) scratch.buf = Buffer.allocUnsafeSlow(Math.max(total, 2 * 1024 * 1024));
  const chunks: Array<{ digest: Digest; raw: Buffer }> = [];
  let at = 0;
  for (let i = 0; i < t.lengths.length; i++) {
    const length = t.lengths[i]!;
    const got = reader.read(t.path, t.ranges, i === 0 ? 0 : t.ends[i - 1]!, t.ends[i]!, scratch.buf, at);
    if (got !== length) throw new ChunkCorruptError(t.digests[i]!, `${t.path} holds ${got < 0 ? 'less' : got} of its ${length} bytes`);
    chunks.push({ digest: t.digests[i]!, raw: scratch.buf.subarray(at, at + length) });
    at += length;
  }
  return encodeRecords(codec, chunks);
}

/**
 * A push's new chunks as pack records (storage/protocol/record-upload.ts):
 * read from the file and compressed into the store's own stored form (zstd
 * level 1 frames with their checksums) on two worker threads, so the event
 * loop only moves the records to the socket; the server keeps each record
 * as it is after decoding and hashing it once. The chunks are not re-hashed
 * here (the file was hashed when it was indexed, and the server hashes every
 * record: a file that changed since is refused there, and push.ts says so).
 * Used for large uploads (a new base); small ones squeeze harder as one zstd
 * stream.
 */
import { Readable } from 'node:stream';
import { CodecPool } from '../storage/chunks/codec-pool.js';
import { DEFAULT_LEVEL } from '../storage/chunks/local-chunk-core.js';
import { digestFromRaw, type Digest } from '../storage/digest.js';
import { ChunkCorruptError, SnapyardError } from '../storage/errors.js';
import { RECORDS_UPLOAD_TYPE } from '../storage/protocol/record-upload.js';
import type { Registry } from './registry.js';
import type { FileChunks } from '../storage/chunks/file-ranges.js';
import type { Records } from '../storage/chunks/remote-chunk-spool.js';
import type { LocalSources } from './sources.js';

/** Raw bytes per batch handed to a worker. */
const BATCH_BYTES = 1024 * 1024;
/** Batches being compressed at once (two per worker: one compressing while the other's answer travels). */
const IN_FLIGHT = 4;

/** Uploads `todo` (hex digests and lengths, in order) as records; the bytes sent. */
export async function uploadRecords(reg: Registry, repo: string, session: string, file: string, sources: LocalSources, todo: Array<{ hex: string; length: number }>, level = DEFAULT_LEVEL): Promise<number> {
  const codecs = new CodecPool(level, 2);
  let wire = 0;
  const changed = (hex: string) => new SnapyardError('CHUNK_MISSING', `chunk sha256:${hex} of ${file} could not be read back (did the file change?)`);
  let failure: unknown = null;
  async function* body(): AsyncGenerator<Uint8Array> {
    try {
      yield* records();
    } catch (e) {
      failure = e;
      throw e;
    }
  }
  async function* records(): AsyncGenerator<Uint8Array> {
    const inflight: Array<Promise<Records>> = [];
    // One batch at a time: chunks a local file holds (read and encoded on a worker), or bytes from the cache.
    let file: FileChunks | null = null;
    let cached: Array<{ digest: Digest; raw: Buffer }> = [];
    let bytes = 0;
    const send = () => {
      const p = file ? codecs.encodeFileRecords(file) : codecs.encodeRecords(cached);
      p.catch(() => {}); // awaited below, in order; no unhandled rejection if an earlier one fails first
      inflight.push(p);
      file = null;
      cached = [];
      bytes = 0;
    };
    const next = async (): Promise<Buffer> => {
      try {
        return (await inflight.shift()!).buf;
      } catch (e) {
        if (e instanceof ChunkCorruptError) throw changed(e.digest.slice('sha256:'.length));
        throw e;
      }
    };
    for (const t of todo) {
      const digest = digestFromRaw(Buffer.from(t.hex, 'hex'));
      const at = sources.spansOf(t.hex);
      if (at) {
        if (cached.length > 0 || (file && file.path !== at.path)) send();
        file ??= { path: at.path, ranges: [], ends: [], lengths: [], digests: [] };
        for (const n of at.ranges) file.ranges.push(n);
        file.ends.push(file.ranges.length);
        file.lengths.push(t.length);
        file.digests.push(digest);
      } else {
        // Verified as it is read (the cache's bytes).
        const raw = await sources.get(t.hex);
        if (!raw || raw.byteLength !== t.length) throw changed(t.hex);
        if (file) send();
        cached.push({ digest, raw });
      }
      bytes += t.length;
      if (bytes >= BATCH_BYTES) {
        send();
        if (inflight.length >= IN_FLIGHT) {
          const out = await next();
          wire += out.byteLength;
          yield out;
        }
      }
    }
    if (file || cached.length > 0) send();
    while (inflight.length > 0) {
      const out = await next();
      wire += out.byteLength;
      yield out;
    }
  }
  try {
    const res = await reg.request('POST', `/snapyard/v1/${repo}/_upload?session=${encodeURIComponent(session)}`, {
      body: Readable.from(body()),
      headers: { 'content-type': RECORDS_UPLOAD_TYPE },
    });
    await res.body.dump();
  } catch (e) {
    // The body's own failure (a file changed under the push) says more than the connection's.
    throw failure ?? e;
  } finally {
    await codecs.close();
  }
  return wire;
}

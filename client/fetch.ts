/**
 * Downloads chunks a pull lacks, in bulk: batches of up to 8 MiB (raw) per
 * `_chunks` request, a few requests at a time. Each frame is decoded (the
 * stored form, or zstd against a dictionary of chunks the client holds),
 * verified against its digest and put in the cache; the cache is flushed
 * after the first batch and then every FLUSH_BYTES (and at the end), so an
 * interrupted pull keeps what it got but for at most the last FLUSH_BYTES. A stored form
 * goes into a cache that takes them (ChunkWriter.addStored) as it is: its
 * workers decode and hash it, and nothing is compressed again.
 *
 * With `placer` (a full pull writing its image as chunks arrive,
 * client/streamed-image.ts), every chunk also goes to its places in the
 * image: a stored form written there by the cache's worker that verified it
 * (nothing decoded twice), any other through the placer.
 */
import { ChunkCodec } from '../storage/chunks/chunk-codec.js';
import type { ChunkWriter } from '../storage/chunks/chunk-store.js';
import { digestFromRaw, type Digest } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { decompressWithDict } from '../storage/delta/dict-codec.js';
import { ENC_DICT, ENC_STORED, FRAME_HEADER, readChunkFrames, type ChunkFrame } from '../storage/protocol/wire.js';
import type { ClientCache } from './cache.js';
import type { Registry } from './registry.js';
import type { LocalSources } from './sources.js';
import type { ChunkPlacer } from './streamed-image.js';

export interface Want {
  hex: string;
  length: number;
}

export interface FetchOptions {
  registry: Registry;
  repo: string;
  blob: Digest;
  have: Digest[];
  sources: LocalSources;
  cache: ClientCache;
  concurrency?: number;
  batchBytes?: number;
  onChunk?: (raw: number, wire: number) => void;
  /** Where each downloaded chunk's verified bytes go (a full pull's image). */
  placer?: ChunkPlacer;
  /**
   * false: the cache is not flushed here; the caller flushes (the lazy mount
   * does it in the background, off the guest's read path). Chunks not yet
   * flushed are read from the cache all the same. Default true.
   */
  flush?: boolean;
}

/** Raw bytes between flushes of the cache after the first (each flush fsyncs the packs: one per 8 MiB batch stalled its workers for 1.8 s of a 1 GB pull, 1.1 s at 64 MiB). */
const FLUSH_BYTES = 64 * 1024 * 1024;

export interface FetchResult {
  chunks: number;
  rawBytes: number;
  wireBytes: number;
}

export function batchesOf(want: Want[], batchBytes: number, maxChunks = 4096): Want[][] {
  const out: Want[][] = [];
  let cur: Want[] = [];
  let bytes = 0;
  for (const w of want) {
    if (cur.length > 0 && (bytes + w.length > batchBytes || cur.length >= maxChunks)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(w);
    bytes += w.length;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

export async function fetchChunks(want: Want[], opts: FetchOptions): Promise<FetchResult> {
  const codec = new ChunkCodec();
  const total: FetchResult = { chunks: 0, rawBytes: 0, wireBytes: 0 };
  const queue = batchesOf(want, opts.batchBytes ?? 8 * 1024 * 1024);
  const retry: Want[] = [];
  const placer = opts.placer;
  const flushing = opts.flush !== false;
  let flushes = 0;
  let unflushed = 0;
  const runBatch = async (batch: Want[], have: Digest[]) => {
    placer?.check();
    const res = await opts.registry.request('POST', `/snapyard/v1/${opts.repo}/_chunks`, {
      body: JSON.stringify({ blob: opts.blob, chunks: batch.map((w) => w.hex), have }),
      headers: { 'content-type': 'application/json' },
    });
    // Batched into the cache: hashed here (the check of every chunk), compressed and appended by its workers.
    const writer = opts.cache.chunks.writer();
    try {
      await receive(readChunkFrames(res.body), batch, writer);
    } catch (e) {
      // A response abandoned mid-way (a corrupt chunk) is aborted: left unread, it holds its connection, and the pool's close() never ends.
      res.body.destroy();
      throw e;
    } finally {
      // What arrived is kept even if the batch broke off: the next run need not fetch it again.
      await writer.finish();
      for (const w of batch) unflushed += w.length;
      if (flushing && (flushes === 0 || unflushed >= FLUSH_BYTES)) {
        flushes++;
        unflushed = 0;
        await opts.cache.chunks.flush();
      }
    }
  };
  const count = (raw: number, wire: number) => {
    total.chunks++;
    total.rawBytes += raw;
    total.wireBytes += wire;
    opts.onChunk?.(raw, wire);
  };
  const receive = async (frames: AsyncIterable<ChunkFrame>, batch: Want[], writer: ChunkWriter) => {
    const expected = new Map(batch.map((w) => [w.hex, w]));
    for await (const f of frames) {
      const hex = f.digest.toString('hex');
      const want = expected.get(hex);
      if (!want) throw new SnapyardError('CHUNK_CORRUPT', `server sent chunk sha256:${hex}, which was not asked for`);
      expected.delete(hex);
      let raw: Buffer | null;
      if (f.encoding === ENC_STORED) {
        // The stored form names its length: never decode more than the index says.
        if (f.payload.byteLength < 12 || f.payload.readUInt32LE(8) !== want.length || f.payload.byteLength > ChunkCodec.bound(want.length)) {
          throw new SnapyardError('CHUNK_CORRUPT', `chunk sha256:${hex} from the server has the wrong length`);
        }
        if (writer.addStored) {
          // Kept as the server stored it: the cache's workers decode and hash it (a bad one fails the batch), nothing is compressed again.
          const digest = digestFromRaw(f.digest);
          const place = placer?.place(hex) ?? undefined;
          const r = await writer.addStored(digest, f.payload, want.length, place);
          if (r.placed) placer!.placed(hex, r.placed);
          else if (place) placer!.write(hex, () => opts.cache.chunks.get(digest)); // the cache had it already (another pull stored it meanwhile)
          count(want.length, FRAME_HEADER + f.payload.byteLength);
          continue;
        }
        raw = codec.decodeUnverified(f.payload, digestFromRaw(f.digest));
      }
      else if (f.encoding === ENC_DICT) raw = await decodeWithDict(opts.sources, f.dict, f.payload, want.length);
      else throw new SnapyardError('CHUNK_CORRUPT', `unknown chunk encoding ${f.encoding}`);
      const ok = raw !== null && raw.byteLength === want.length && (await writer.add(raw)).digest === digestFromRaw(f.digest);
      if (!ok) {
        if (f.encoding === ENC_STORED) throw new SnapyardError('CHUNK_CORRUPT', `chunk sha256:${hex} from the server does not hash to its name`);
        retry.push(want); // a dictionary we could not produce, or a wrong result: ask again, plainly
        continue;
      }
      placer?.write(hex, raw!);
      count(raw!.byteLength, FRAME_HEADER + f.dict.length * 32 + f.payload.byteLength);
    }
    if (expected.size > 0) throw new SnapyardError('CHUNK_MISSING', `server response ended with ${expected.size} chunks not sent`);
  };
  const workers = Array.from({ length: Math.min(opts.concurrency ?? 3, queue.length) }, async () => {
    for (let b = queue.shift(); b; b = queue.shift()) await runBatch(b, opts.have);
  });
  try {
    await Promise.all(workers);
    if (retry.length > 0) for (const b of batchesOf(retry, opts.batchBytes ?? 8 * 1024 * 1024)) await runBatch(b, []);
    if (flushing && unflushed > 0) await opts.cache.chunks.flush();
  } catch (e) {
    placer?.fail(e);
    throw e;
  }
  placer?.downloaded();
  return total;
}

async function decodeWithDict(sources: LocalSources, dict: Buffer[], payload: Buffer, rawLength: number): Promise<Buffer | null> {
  const parts: Buffer[] = [];
  for (const d of dict) {
    const b = await sources.get(d.toString('hex'));
    if (!b) return null;
    parts.push(b);
  }
  try {
    return decompressWithDict(payload, Buffer.concat(parts), rawLength);
  } catch {
    return null;
  }
}

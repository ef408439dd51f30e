/**
 * Downloads chunks a pull lacks, in bulk: batches of up to 8 MiB (raw) per
 * `_chunks` request, a few requests at a time. Each frame is decoded (the
 * stored form, or zstd against a dictionary of chunks the client holds),
 * verified against its digest and put in the cache; the cache is flushed
 * after every batch, so an interrupted pull keeps what it got.
 */
import { ChunkCodec } from '../storage/chunk-codec.js';
import { digestFromRaw, sha256Raw, type Digest } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { decompressWithDict } from '../storage/dict-codec.js';
import { ENC_DICT, ENC_STORED, FRAME_HEADER, readChunkFrames } from '../storage/wire.js';
import type { ClientCache } from './cache.js';
import type { Registry } from './registry.js';
import type { LocalSources } from './sources.js';

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
}

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
  const runBatch = async (batch: Want[], have: Digest[]) => {
    const res = await opts.registry.request('POST', `/snapyard/v1/${opts.repo}/_chunks`, {
      body: JSON.stringify({ blob: opts.blob, chunks: batch.map((w) => w.hex), have }),
      headers: { 'content-type': 'application/json' },
    });
    const expected = new Set(batch.map((w) => w.hex));
    for await (const f of readChunkFrames(res.body)) {
      const hex = f.digest.toString('hex');
      if (!expected.delete(hex)) throw new SnapyardError('CHUNK_CORRUPT', `server sent chunk sha256:${hex}, which was not asked for`);
      const wire = FRAME_HEADER + f.dict.length * 32 + f.payload.byteLength;
      let raw: Buffer | null;
      if (f.encoding === ENC_STORED) raw = codec.decode(f.payload, digestFromRaw(f.digest));
      else if (f.encoding === ENC_DICT) raw = await decodeWithDict(opts.sources, f.dict, f.payload, batch.find((w) => w.hex === hex)!.length);
      else throw new SnapyardError('CHUNK_CORRUPT', `unknown chunk encoding ${f.encoding}`);
      if (raw && sha256Raw(raw).toString('hex') !== hex) raw = null;
      if (!raw) {
        retry.push(batch.find((w) => w.hex === hex)!); // a dictionary chunk we could not produce: ask again, plainly
        continue;
      }
      await opts.cache.chunks.put(digestFromRaw(f.digest), raw);
      total.chunks++;
      total.rawBytes += raw.byteLength;
      total.wireBytes += wire;
      opts.onChunk?.(raw.byteLength, wire);
    }
    if (expected.size > 0) throw new SnapyardError('CHUNK_MISSING', `server response ended with ${expected.size} chunks not sent`);
    await opts.cache.chunks.flush();
  };
  const workers = Array.from({ length: Math.min(opts.concurrency ?? 3, queue.length) }, async () => {
    for (let b = queue.shift(); b; b = queue.shift()) await runBatch(b, opts.have);
  });
  await Promise.all(workers);
  if (retry.length > 0) for (const b of batchesOf(retry, opts.batchBytes ?? 8 * 1024 * 1024)) await runBatch(b, []);
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

/**
 * A push of a new version, delta-compressed against a previous one the client
 * holds (a seed file the registry has as a blob of the same repository):
 * the new chunks' resemblance sketches go to `_similar`, which names, for
 * each, up to 3 held chunks of the seed's blob most like it; each new chunk
 * is then zstd-compressed with those chunks (read from the seed file,
 * verified) as its dictionary, or sent as a stored form when that is
 * smaller, as chunk frames (docs/delta-protocol.md, "Pushing a new
 * version"). The push then sends about what an overlay pull of the same
 * change receives. Memory: sketches (~100 bytes a chunk) and one chunk with
 * its dictionary at a time; chunks are read twice from the file.
 */
import { Readable } from 'node:stream';
import { ChunkCodec } from '../storage/chunks/chunk-codec.js';
import { compressWithDict } from '../storage/delta/dict-codec.js';
import { encodeSketch, sketch } from '../storage/delta/resemblance.js';
import type { Digest } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { parseAnswer, similarAnswer } from '../storage/protocol/api.js';
import { ENC_DICT, ENC_STORED, FRAMES_UPLOAD_TYPE, frameHeader } from '../storage/protocol/wire.js';
import type { Registry } from './registry.js';
import type { LocalSources } from './sources.js';

/**
 * zstd level of dictionary frames (the server's _chunks uses 6). A version's
 * few MB: on the bench corpus games-v1 -> games-v2 (105 new chunks, 10.3 MB)
 * 12 sends 26 KB less than 6 for about 0.2 s more.
 */
const DICT_LEVEL = 12;
/** zstd level of new chunks nothing resembles (a version's few MB: worth squeezing). */
const STORED_LEVEL = 9;

export interface DeltaUploadResult {
  wire: number;
  /** Chunks sent as dictionary frames. */
  dictFrames: number;
}

/** Uploads `todo` as chunk frames, compressed against chunks of the `have` blobs that `sources` also holds. */
export async function uploadDeltaFrames(reg: Registry, repo: string, session: string, file: string, sources: LocalSources, todo: Array<{ hex: string; length: number }>, have: Digest[]): Promise<DeltaUploadResult> {
  const read = async (hex: string) => {
    const b = await sources.get(hex);
    if (!b) throw new SnapyardError('CHUNK_MISSING', `chunk sha256:${hex} of ${file} could not be read back (did the file change?)`);
    return b;
  };
  const parts: Buffer[] = [];
  for (const t of todo) {
    const sk = encodeSketch(sketch(await read(t.hex)));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(sk.byteLength);
    parts.push(len, sk);
  }
  const ask = Buffer.concat(parts);
  const query = `session=${encodeURIComponent(session)}${have.map((h) => `&have=${h}`).join('')}`;
  const answer = await reg.request('POST', `/snapyard/v1/${repo}/_similar?${query}`, { body: ask, headers: { 'content-type': 'application/octet-stream' } });
  const { similar } = parseAnswer(similarAnswer, await answer.body.json(), '_similar');
  if (similar.length !== todo.length) throw new SnapyardError('REGISTRY_ERROR', `_similar answered ${similar.length} lists for ${todo.length} sketches`);
  const codec = new ChunkCodec(STORED_LEVEL);
  let wire = ask.byteLength;
  let dictFrames = 0;
  async function* frames(): AsyncGenerator<Uint8Array> {
    for (let i = 0; i < todo.length; i++) {
      const raw = await read(todo[i]!.hex);
      const stored = codec.encode(raw);
      // The similar chunks this client holds (verified reads of the seed files), in the order named.
      const dict: Buffer[] = [];
      const ids: Buffer[] = [];
      for (const h of similar[i]!) {
        const b = await sources.get(h);
        if (b) {
          dict.push(b);
          ids.push(Buffer.from(h, 'hex'));
        }
      }
      let header = frameHeader(Buffer.from(todo[i]!.hex, 'hex'), ENC_STORED, [], stored.byteLength);
      let payload = stored;
      if (dict.length > 0) {
        const z = compressWithDict(raw, Buffer.concat(dict), DICT_LEVEL);
        if (z.byteLength + 32 * ids.length < stored.byteLength) {
          header = frameHeader(Buffer.from(todo[i]!.hex, 'hex'), ENC_DICT, ids, z.byteLength);
          payload = z;
          dictFrames++;
        }
      }
      wire += header.byteLength + payload.byteLength;
      yield Buffer.concat([header, payload]);
    }
  }
  const res = await reg.request('POST', `/snapyard/v1/${repo}/_upload?session=${encodeURIComponent(session)}`, {
    body: Readable.from(frames()),
    headers: { 'content-type': FRAMES_UPLOAD_TYPE },
  });
  await res.body.dump();
  return { wire, dictFrames };
}

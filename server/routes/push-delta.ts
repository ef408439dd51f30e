/**
 * Delta-compressed pushes (docs/delta-protocol.md, "Pushing a new version"):
 *   POST /snapyard/v1/<name>/_similar   sketches of a session's new chunks -> held chunks like each
 *   POST /snapyard/v1/<name>/_upload    (application/vnd.snapyard.chunks.v1) chunk frames, as
 *                                       _chunks sends them: stored forms, or zstd frames whose
 *                                       dictionary is held chunks
 * A client that holds a previous version (a seed file) asks which held chunks
 * resemble its new ones, compresses each new chunk with the similar chunks it
 * has as a dictionary, and uploads the frames: the push sends about what an
 * overlay pull of the same change receives.
 */
import { OciError } from '../oci-error.js';
import { readLimited } from '../http-util.js';
import { checkDigest } from '../names.js';
import { respond, type RequestContext } from '../context.js';
import { decodeSketch } from '../../storage/delta/resemblance.js';
import { decompressWithDict } from '../../storage/delta/dict-codec.js';
import { ENC_DICT, ENC_STORED, MAX_FRAME_PAYLOAD, readChunkFrames } from '../../storage/protocol/wire.js';
export { FRAMES_UPLOAD_FORM, FRAMES_UPLOAD_TYPE } from '../../storage/protocol/wire.js';
import { ChunkCodec, CHUNK_HEADER_SIZE, CHUNK_MAGIC } from '../../storage/chunks/chunk-codec.js';
import type { ChunkWriter } from '../../storage/chunks/chunk-store.js';
import { digestFromRaw, type Digest } from '../../storage/digest.js';
import { isSnapyardError, SnapyardError } from '../../storage/errors.js';
import type { DeltaService } from '../delta-service.js';
import binding from 'zstd-napi/binding.js';

/** Held chunks a dictionary may name (as _chunks sends at most). */
const MAX_DICT_CHUNKS = 3;

/** Sketches a _similar request may carry (a push session's new chunks). */
const MAX_SKETCHES = 1 << 16;

/** POST _similar: for each sketch, up to 3 chunks of the held blobs (each in <name>) most like it. */
export async function similarChunks(ctx: RequestContext, svc: DeltaService, name: string): Promise<Response> {
  const session = ctx.url.searchParams.get('session') ?? '';
  const haveList = ctx.url.searchParams.getAll('have');
  if (haveList.length < 1 || haveList.length > 4) throw new OciError(400, 'UNSUPPORTED', `name 1 to 4 held blobs (have=), not ${haveList.length}`);
  const s = await svc.session(session, name);
  if (!s) throw new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `push session ${session.slice(0, 64)} is not open`);
  const have: Digest[] = [];
  for (const h of haveList) {
    const d = checkDigest(h);
    if (!(await ctx.store.blobs.stat(name, d))) throw new OciError(404, 'BLOB_UNKNOWN', `blob ${d} is not in ${name}`, { digest: d });
    have.push(d);
  }
  const body = await readLimited(ctx.incoming, 16 * 1024 * 1024);
  const sketches: Buffer[] = [];
  for (let at = 0; at < body.byteLength; ) {
    const len = at + 4 <= body.byteLength ? body.readUInt32LE(at) : -1;
    if (len < 0 || at + 4 + len > body.byteLength || sketches.length >= MAX_SKETCHES) throw new OciError(400, 'SIZE_INVALID', `sketch ${sketches.length}: cut short, or more than ${MAX_SKETCHES}`);
    sketches.push(body.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  const held = await svc.encoder.prepare(have);
  const similar = sketches.map((b, i) => {
    if (!held.table) return [];
    let sk: Uint32Array;
    try {
      sk = decodeSketch(b);
    } catch (e) {
      throw new OciError(400, 'SIZE_INVALID', `sketch ${i} does not decode: ${(e as Error).message}`);
    }
    return held.table.similar(sk, MAX_DICT_CHUNKS, 1).map((id) => held.ids[id]!.toString('hex'));
  });
  return respond(200, { 'Content-Type': 'application/json' }, JSON.stringify({ similar }));
}

/**
 * The frames of an upload into `writer`: each chunk checked against its name
 * (a stored form decoded and hashed, by the store where it takes stored forms;
 * a dictionary frame decompressed against the held chunks it names, at most
 * MAX_FRAME_PAYLOAD bytes, then hashed), raw bytes summed at most `maxRawBytes`.
 * Malformed frames are SIZE_INVALID, chunks that are not their names
 * CHUNK_CORRUPT, dictionaries the store lacks CHUNK_MISSING.
 */
export async function uploadFrames(source: AsyncIterable<Uint8Array>, svc: DeltaService, writer: ChunkWriter, maxRawBytes: number): Promise<{ chunks: number; bytes: number }> {
  const codec = new ChunkCodec();
  let chunks = 0;
  let bytes = 0;
  for await (const f of readChunkFrames(source)) {
    const digest = digestFromRaw(f.digest);
    let rawLength: number;
    if (f.encoding === ENC_STORED) {
      if (f.payload.byteLength < CHUNK_HEADER_SIZE || f.payload.readUInt32LE(0) !== CHUNK_MAGIC) throw new SnapyardError('SIZE_INVALID', `frame ${chunks}: not a stored chunk`);
      rawLength = f.payload.readUInt32LE(8);
      if (rawLength > MAX_FRAME_PAYLOAD) throw new SnapyardError('SIZE_INVALID', `frame ${chunks} claims ${rawLength} bytes`);
      if ((bytes += rawLength) > maxRawBytes) throw new SnapyardError('LIMIT_EXCEEDED', `the upload holds more than ${maxRawBytes} bytes of chunks`);
      if (writer.addStored) await writer.addStored(digest, f.payload, rawLength);
      else await addChecked(writer, digest, codec.decode(f.payload, digest));
    } else if (f.encoding === ENC_DICT) {
      if (f.dict.length === 0 || f.dict.length > MAX_DICT_CHUNKS) throw new SnapyardError('SIZE_INVALID', `frame ${chunks} names ${f.dict.length} dictionary chunks (1 to ${MAX_DICT_CHUNKS})`);
      let declared: number | null;
      try {
        declared = binding.getFrameContentSize(f.payload);
      } catch {
        declared = null;
      }
      if (declared === null || declared > MAX_FRAME_PAYLOAD) throw new SnapyardError('SIZE_INVALID', `frame ${chunks}: not a zstd frame of at most ${MAX_FRAME_PAYLOAD} bytes`);
      rawLength = declared;
      if ((bytes += rawLength) > maxRawBytes) throw new SnapyardError('LIMIT_EXCEEDED', `the upload holds more than ${maxRawBytes} bytes of chunks`);
      const dict = Buffer.concat(await Promise.all(f.dict.map((d) => svc.store.chunks.get(digestFromRaw(d)))));
      await addChecked(writer, digest, decompressWithDict(f.payload, dict, rawLength));
    } else {
      throw new SnapyardError('SIZE_INVALID', `frame ${chunks}: encoding ${f.encoding}`);
    }
    chunks++;
  }
  return { chunks, bytes };
}

async function addChecked(writer: ChunkWriter, digest: Digest, raw: Buffer): Promise<void> {
  const r = await writer.add(raw);
  if (r.digest !== digest) throw new SnapyardError('CHUNK_CORRUPT', `chunk ${digest} is corrupt: content hashes to ${r.digest}`);
}

/** Whether a failure of uploadFrames is the client's (a 4xx). */
export function framesError(e: unknown): unknown {
  if (isSnapyardError(e, 'CHUNK_MISSING')) return new OciError(400, 'BLOB_UNKNOWN', `a dictionary chunk is not held: ${e.message}`);
  return e;
}

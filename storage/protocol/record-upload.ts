/**
 * A push's chunks in their stored form (docs/delta-protocol.md, "Uploading
 * stored chunks"): the body of POST _upload with content type
 * RECORDS_UPLOAD_TYPE is pack records end to end, as docs/storage.md lays
 * them out in a pack:
 *
 *   0   4   magic "SYR1"
 *   4   32  sha256 of the chunk's uncompressed bytes
 *   36  4   stored length L, u32 LE
 *   40  L   the stored chunk (12-byte header: "SYC1", encoding, raw length; payload)
 *
 * The client compresses its new chunks on its own cores (level 1 frames with
 * their checksums, the store's own form), and the server keeps them as they
 * are once they decode to bytes that hash to their names: nothing is
 * compressed twice. A server offers it in its _missing answer
 * (`uploadForms`); a client that does not see it there sends the zstd stream.
 */
import { ExactReader, MAX_FRAME_PAYLOAD } from './wire.js';
import { ChunkCodec, CHUNK_HEADER_SIZE, CHUNK_MAGIC } from '../chunks/chunk-codec.js';
import { RECORD_HEADER_SIZE, RECORD_MAGIC } from '../chunks/pack-files.js';
import { SnapyardError } from '../errors.js';

export const RECORDS_UPLOAD_TYPE = 'application/vnd.snapyard.chunk-records.v1';
/** The _missing answer's name for it (`uploadForms`), beside 'zstd-stream'. */
export const RECORDS_UPLOAD_FORM = 'records';

/** Largest stored form of an uploaded chunk (one of MAX_FRAME_PAYLOAD bytes, incompressible). */
const MAX_STORED = ChunkCodec.bound(MAX_FRAME_PAYLOAD);

export interface UploadedRecord {
  digest: Buffer;
  stored: Buffer;
  rawLength: number;
}

/**
 * The records of an upload body, each header checked (magic, a stored length
 * no larger than a largest chunk's, a chunk header whose raw length is at most
 * MAX_FRAME_PAYLOAD), and the raw bytes they claim, summed, at most
 * `maxRawBytes` (LIMIT_EXCEEDED). Nothing is decoded here: the chunk store
 * checks each stored form against its name (ChunkWriter.addStored).
 * Malformed input is SIZE_INVALID.
 */
export async function* readUploadRecords(source: AsyncIterable<Uint8Array>, maxRawBytes: number): AsyncGenerator<UploadedRecord> {
  const r = new ExactReader(source);
  let raw = 0;
  for (let n = 0; ; n++) {
    const h = await r.read(RECORD_HEADER_SIZE);
    if (!h) return;
    if (h.readUInt32LE(0) !== RECORD_MAGIC) throw new SnapyardError('SIZE_INVALID', `uploaded record ${n} does not start with SYR1`);
    const len = h.readUInt32LE(36);
    if (len < CHUNK_HEADER_SIZE || len > MAX_STORED) throw new SnapyardError('SIZE_INVALID', `uploaded record ${n} claims ${len} stored bytes (${CHUNK_HEADER_SIZE} to ${MAX_STORED})`);
    const stored = (await r.read(len))!;
    const rawLength = stored.readUInt32LE(8);
    if (stored.readUInt32LE(0) !== CHUNK_MAGIC || rawLength > MAX_FRAME_PAYLOAD) {
      throw new SnapyardError('SIZE_INVALID', `uploaded record ${n}: not a stored chunk of at most ${MAX_FRAME_PAYLOAD} bytes`);
    }
    raw += rawLength;
    if (raw > maxRawBytes) throw new SnapyardError('LIMIT_EXCEEDED', `the upload holds more than ${maxRawBytes} bytes of chunks`);
    yield { digest: h.subarray(4, 36), stored, rawLength };
  }
}

import { decodeBlobIndex, type BlobIndex } from '../storage/blobs/blob-index.js';
import { deltaAnswer, type DeltaAnswer } from '../storage/protocol/api.js';
import { isDigest, sha256, type Digest } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { decompressWithPrefix } from '../storage/protocol/wire.js';
import type { Ref } from './ref.js';
import type { Registry } from './registry.js';

export type { DeltaAnswer };

export interface RemoteIndex {
  answer: DeltaAnswer;
  index: BlobIndex;
  /** The index's stored bytes (checked against its digest). */
  bytes: Buffer;
  /** What the index cost on the wire (compressed, as a difference when possible). */
  packedBytes: number;
}

/**
 * Asks the server (`_delta`) for a snapshot's blob and index, saying which
 * blobs we hold; `indexOf` returns the stored index bytes of a held blob
 * (the server may send the target's index as a difference from one).
 */
export async function remoteIndex(reg: Registry, ref: Ref, have: Digest[], indexOf: (blob: Digest) => Buffer | null): Promise<RemoteIndex> {
  const answer = await reg.call('POST', `/snapyard/v1/${ref.repo}/_delta`, deltaAnswer, { target: ref.reference, have });
  if (!isDigest(answer.blob.digest) || !isDigest(answer.index.digest)) throw new SnapyardError('INDEX_INVALID', 'server answered with invalid digests');
  const dict = answer.index.base ? indexOf(answer.index.base) : null;
  if (answer.index.base && !dict) throw new SnapyardError('INDEX_INVALID', `server sent the index as a difference from ${answer.index.base}, which is not held here`);
  const packed = Buffer.from(answer.index.data, 'base64');
  const bytes = decompressWithPrefix(packed, dict, 1 << 30);
  if (sha256(bytes) !== answer.index.digest) throw new SnapyardError('INDEX_INVALID', `index does not hash to ${answer.index.digest}`);
  const index = decodeBlobIndex(bytes);
  if (index.blobDigest !== answer.blob.digest || index.size !== answer.blob.size) throw new SnapyardError('INDEX_INVALID', 'index describes another blob');
  return { answer, index, bytes, packedBytes: packed.byteLength };
}

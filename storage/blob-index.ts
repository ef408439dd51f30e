import { ChunkIndex, KIND_BYTES, readIndexHeader, type PrefixResolver } from './chunk-index.js';
import { KIND_QCOW2, Qcow2Index } from './qcow2-index.js';
import { indexInvalid } from './chunk-index.js';

/** Any chunk index: byte chunks (kind 0) or a qcow2 guest view plus host recipe (kind 1). */
export type BlobIndex = ChunkIndex | Qcow2Index;

/** Decodes a stored index, or (width < 32) a compact one whose digest prefixes `resolve` expands. */
export function decodeBlobIndex(buf: Buffer, width = 32, resolve?: PrefixResolver): BlobIndex {
  const { kind } = readIndexHeader(buf);
  if (kind === KIND_BYTES) return ChunkIndex.decode(buf, width, resolve);
  if (kind === KIND_QCOW2) return Qcow2Index.decode(buf, width, resolve);
  throw indexInvalid(`unsupported kind ${kind}`);
}

/** Every distinct chunk digest (raw, hex keyed) the index references, with its length. */
export function chunkSet(index: BlobIndex): Map<string, number> {
  const out = new Map<string, number>();
  for (const list of index.lists()) {
    for (let i = 0; i < list.count; i++) out.set(list.rawDigestAt(i).toString('hex'), list.lengths[i]!);
  }
  return out;
}

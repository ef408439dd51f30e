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

/**
 * Every distinct chunk the indexes reference (hex digest -> raw digest and
 * length), in first-seen order; `into` collects across several indexes.
 */
export function distinctChunks(indexes: BlobIndex[], into = new Map<string, { raw: Buffer; length: number }>()): Map<string, { raw: Buffer; length: number }> {
  for (const index of indexes) {
    for (const list of index.lists()) {
      for (let i = 0; i < list.count; i++) {
        const raw = list.rawDigestAt(i);
        const hex = raw.toString('hex');
        if (!into.has(hex)) into.set(hex, { raw: Buffer.from(raw), length: list.lengths[i]! });
      }
    }
  }
  return into;
}

/** An estimate of the memory an index holds (per chunk: digest, length, start), for the cache budget. */
export function indexMemoryBytes(index: BlobIndex): number {
  let n = 512;
  for (const list of index.lists()) n += 256 + list.count * 44;
  return n;
}

/** An estimate of the memory a chunkSet holds (a hex key and a number per chunk), for the cache budget. */
export function chunkSetMemoryBytes(set: Map<string, number>): number {
  return 256 + set.size * 160;
}

/** Every distinct chunk digest (hex) the index references, with its length. */
export function chunkSet(index: BlobIndex): Map<string, number> {
  const out = new Map<string, number>();
  for (const [hex, c] of distinctChunks([index])) out.set(hex, c.length);
  return out;
}

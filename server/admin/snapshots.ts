/**
 * What the admin API knows about a snapshot (a manifest): its image blob,
 * its lineage (base), and from the blob's chunk index its virtual size and
 * the chunks it references.
 */
import { chunkSet } from '../../storage/blobs/blob-index.js';
import type { Digest } from '../../storage/digest.js';
import type { ManifestSummary } from '../../storage/meta/metadata.js';
import { KIND_QCOW2 } from '../../storage/blobs/qcow2-index.js';
import type { Store } from '../../storage/open-store.js';

export { ANN_BACKING_FILE, ANN_BASE_BLOB } from '../../storage/meta/manifest-facts.js';

import { imageBlob } from '../../storage/meta/dependencies.js';

export { imageBlob, lineageOf, type Lineage } from '../../storage/meta/dependencies.js';

/** A snapshot's image and what its chunk index says (null fields for an index manifest or a blob that is gone). */
export interface ImageFacts {
  blob: Digest | null;
  size: number | null;
  layout: 'qcow2' | 'bytes' | null;
  virtualSize: number | null;
  indexDigest: Digest | null;
  /** Distinct chunks the image references (index included): raw digest (hex) -> raw length. */
  chunks: Map<string, number>;
}

export async function imageFacts(store: Store, m: ManifestSummary): Promise<ImageFacts> {
  const blob = imageBlob(m);
  const rec = blob ? await store.meta.getBlob(blob) : null;
  if (!blob || !rec) return { blob, size: null, layout: null, virtualSize: null, indexDigest: null, chunks: new Map() };
  const index = await store.blobs.index(rec);
  const chunks = chunkSet(index);
  chunks.set(rec.indexDigest.slice('sha256:'.length), 0);
  const qcow2 = index.kind === KIND_QCOW2;
  return {
    blob,
    size: rec.size,
    layout: qcow2 ? 'qcow2' : 'bytes',
    virtualSize: 'layout' in index ? index.layout.virtualSize : rec.size,
    indexDigest: rec.indexDigest,
    chunks,
  };
}

/** Stored bytes (as held in the chunk store) of each chunk in `keys` (raw digests, hex); 0 when not held. */
export async function storedSizes(store: Store, keys: Iterable<string>): Promise<Map<string, number>> {
  await store.chunks.flushIfRoom();
  const list = [...keys];
  const lens = await store.chunks.storedLengths(list.map((k) => Buffer.from(k, 'hex')));
  const out = new Map<string, number>();
  list.forEach((k, i) => out.set(k, lens[i] ?? 0));
  return out;
}

/** Sum of the stored sizes of `keys`. */
export function sumOf(sizes: Map<string, number>, keys: Iterable<string>): number {
  let n = 0;
  for (const k of keys) n += sizes.get(k) ?? 0;
  return n;
}

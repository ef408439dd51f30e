/**
 * What the admin API knows about a snapshot (a manifest): its image blob,
 * its lineage (base), and from the blob's chunk index its virtual size and
 * the chunks it references.
 */
import { chunkSet } from '../../storage/blob-index.js';
import type { Digest } from '../../storage/digest.js';
import type { ManifestRecord } from '../../storage/metadata.js';
import { KIND_QCOW2 } from '../../storage/qcow2-index.js';
import type { Store } from '../../storage/open-store.js';

/** Manifest annotations written by `snapyard push` for an overlay (client/push.ts). */
export const ANN_BASE_BLOB = 'io.snapyard.base.blob';
export const ANN_BACKING_FILE = 'io.snapyard.backing-file';

export interface Lineage {
  /** The OCI subject: the base's manifest. */
  subject: Digest | null;
  /** The base image's blob (annotation io.snapyard.base.blob). */
  blob: Digest | null;
  backingFile: string | null;
}

/** The image a manifest carries: its one layer, or the largest of several; null for an index. */
export function imageBlob(m: ManifestRecord): Digest | null {
  let doc: { layers?: Array<{ digest?: unknown; size?: unknown }> };
  try {
    doc = JSON.parse(m.content.toString('utf8')) as typeof doc;
  } catch {
    return null;
  }
  let best: { digest: Digest; size: number } | null = null;
  for (const l of doc.layers ?? []) {
    if (typeof l.digest !== 'string') continue;
    const size = typeof l.size === 'number' ? l.size : 0;
    if (!best || size > best.size) best = { digest: l.digest as Digest, size };
  }
  return best?.digest ?? null;
}

export function lineageOf(m: ManifestRecord): Lineage | null {
  const blob = (m.annotations?.[ANN_BASE_BLOB] as Digest | undefined) ?? null;
  if (!m.subject && !blob) return null;
  return { subject: m.subject, blob, backingFile: m.annotations?.[ANN_BACKING_FILE] ?? null };
}

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

export async function imageFacts(store: Store, m: ManifestRecord): Promise<ImageFacts> {
  const blob = imageBlob(m);
  const rec = blob ? store.meta.getBlob(blob) : null;
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
  await store.chunks.flush();
  const list = [...keys];
  const lens = store.chunks.storedLengths(list.map((k) => Buffer.from(k, 'hex')));
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

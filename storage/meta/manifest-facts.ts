/**
 * What listings need of a manifest (`_snapshots`, `snapyard ls`, stats, rm
 * and prune dependencies), worked out once when the manifest is stored (and
 * by the schema migration for manifests stored before), so that listings
 * read columns and never parse manifests (a few large, deeply nested ones
 * made every listing take seconds and stalled the server meanwhile).
 */
import type { Digest } from '../digest.js';

/** Manifest annotations written by `snapyard push` for an overlay (client/push.ts). */
export const ANN_BASE_BLOB = 'io.snapyard.base.blob';
export const ANN_BACKING_FILE = 'io.snapyard.backing-file';

export interface ManifestFacts {
  /** The image a manifest carries: its one layer, or the first of the largest; null for an index (or no layers). */
  imageBlob: Digest | null;
  /** Annotation io.snapyard.base.blob: the overlay's base image blob. */
  baseBlob: Digest | null;
  /** Annotation io.snapyard.backing-file. */
  backingFile: string | null;
}

/**
 * The layer a pull fetches: a layer whose media type says qcow2, else the
 * largest (server _delta and client pod-init pick alike). Null without layers.
 */
export function diskLayerOf<L extends { mediaType: string; size: number }>(layers: L[]): L | null {
  if (layers.length === 0) return null;
  return layers.find((l) => /qcow2/i.test(l.mediaType)) ?? layers.reduce((a, b) => (b.size > a.size ? b : a));
}

/** Facts of a manifest from its bytes (anything unreadable counts as absent). */
export function manifestFacts(content: Buffer, annotations?: Record<string, string> | null): ManifestFacts {
  let doc: { layers?: unknown; annotations?: unknown } = {};
  try {
    const v = JSON.parse(content.toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) doc = v as typeof doc;
  } catch {
    /* not JSON: no facts */
  }
  let best: { digest: Digest; size: number } | null = null;
  for (const l of Array.isArray(doc.layers) ? (doc.layers as Array<{ digest?: unknown; size?: unknown } | null>) : []) {
    if (typeof l?.digest !== 'string') continue;
    const size = typeof l.size === 'number' ? l.size : 0;
    if (!best || size > best.size) best = { digest: l.digest as Digest, size };
  }
  const ann = annotations ?? (typeof doc.annotations === 'object' && doc.annotations !== null ? (doc.annotations as Record<string, unknown>) : {});
  const str = (v: unknown) => (typeof v === 'string' ? v : null);
  return { imageBlob: best?.digest ?? null, baseBlob: str(ann[ANN_BASE_BLOB]) as Digest | null, backingFile: str(ann[ANN_BACKING_FILE]) };
}

/** The records of registry metadata, the same whatever store holds them (metadata-store.ts). */
import type { Digest } from '../digest.js';
import type { ManifestFacts } from './manifest-facts.js';

export interface BlobRecord {
  digest: Digest;
  size: number;
  indexDigest: Digest;
}

export interface ManifestRecord {
  repo: string;
  digest: Digest;
  mediaType: string;
  artifactType: string | null;
  subject: Digest | null;
  annotations: Record<string, string> | null;
  size: number;
  content: Buffer;
  createdMs: number;
}

/**
 * A manifest as listings see it: no content, no annotations; what they need
 * of the bytes was stored with it (manifest-facts.ts). Never parses a manifest.
 */
export interface ManifestSummary extends Omit<ManifestRecord, 'content' | 'annotations'>, ManifestFacts {
  /** Child manifests it lists (an index), from manifest_refs. */
  children: Digest[];
}

export interface ManifestRef {
  digest: Digest;
  kind: 'blob' | 'manifest';
  /** Need not be in the repository (non-distributable layers, layers with urls); recorded only when it is. */
  optional?: boolean;
}

/** A manifest to store: its record less what the store derives, plus what it references and the tag to move. */
export type NewManifest = Omit<ManifestRecord, 'size' | 'createdMs'> & {
  refs: ManifestRef[];
  tag: string | null;
  /** Listing metadata; worked out from the content when not given. */
  facts?: ManifestFacts;
};

export interface TagEvent {
  tag: string;
  oldDigest: Digest | null;
  newDigest: Digest | null;
  atMs: number;
  source: string;
}

/** A tag with the time it last moved and the id of that move (a total order of moves). */
export interface TagRow {
  tag: string;
  digest: Digest;
  updatedMs: number;
  seq: number;
}

export interface RepoSummary {
  name: string;
  createdMs: number;
  manifests: number;
  tags: number;
}

export interface UploadRecord {
  id: string;
  repo: string;
  size: number;
  createdMs: number;
  updatedMs: number;
}

/**
 * Manifest rows as both metadata stores read them (the same column names in
 * SQLite and PostgreSQL): the listing columns and row -> record mappers.
 */
import type { Digest } from '../digest.js';
import type { ManifestRecord, ManifestSummary } from './metadata-types.js';

/** The columns of a ManifestSummary (everything but content and annotations). */
export const SUMMARY = 'repo, digest, media_type, artifact_type, subject, size, created_ms, image_blob, base_blob, backing_file';

/** The columns every manifest row has, as a record's fields. */
function rowBase(r: Record<string, unknown>): Omit<ManifestRecord, 'content' | 'annotations'> {
  return {
    repo: r.repo as string,
    digest: r.digest as Digest,
    mediaType: r.media_type as string,
    artifactType: (r.artifact_type as string | null) ?? null,
    subject: (r.subject as Digest | null) ?? null,
    size: r.size as number,
    createdMs: r.created_ms as number,
  };
}

export function toSummary(r: Record<string, unknown>, children: Digest[]): ManifestSummary {
  return {
    ...rowBase(r),
    imageBlob: (r.image_blob as Digest | null) ?? null,
    baseBlob: (r.base_blob as Digest | null) ?? null,
    backingFile: (r.backing_file as string | null) ?? null,
    children,
  };
}

export function annotationsOf(r: Record<string, unknown>): Record<string, string> | null {
  return r.annotations ? (JSON.parse(r.annotations as string) as Record<string, string>) : null;
}

export function toManifest(r: Record<string, unknown>): ManifestRecord {
  return { ...rowBase(r), annotations: annotationsOf(r), content: r.content as Buffer };
}

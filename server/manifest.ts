import { z } from 'zod';
import { OciError } from './oci-error.js';
import { isAnyDigest, type Digest } from '../storage/digest.js';
import type { ManifestRef } from '../storage/meta/metadata.js';

export const MT = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
} as const;

export const MANIFEST_MEDIA_TYPES: readonly string[] = [MT.ociManifest, MT.ociIndex, MT.dockerManifest, MT.dockerList];

/** Largest manifest accepted (the distribution-spec's recommended limit). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/**
 * Deepest JSON nesting accepted (real manifests nest 4-6 levels). Deeper
 * documents are refused before they are parsed, so nothing that later walks
 * or re-serializes a stored manifest can run out of stack on it.
 */
export const MAX_MANIFEST_DEPTH = 64;

/** The deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count); stops counting past the limit. */
export function jsonDepth(text: Uint8Array): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
      if (max > MAX_MANIFEST_DEPTH) return max;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return max;
}

const digestStr = z.string().refine(isAnyDigest, { message: 'must be sha256:<64 lower-case hex> or sha512:<128 lower-case hex>' });
const annotations = z.record(z.string(), z.string()).optional();
const descriptor = z.object({
  mediaType: z.string().min(1),
  digest: digestStr,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations,
  artifactType: z.string().optional(),
  data: z.string().optional(),
  platform: z.unknown().optional(),
});

const imageManifest = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  config: descriptor,
  layers: z.array(descriptor),
  subject: descriptor.optional(),
  annotations,
});

const imageIndex = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: z.string().optional(),
  manifests: z.array(descriptor),
  subject: descriptor.optional(),
  annotations,
});

/**
 * Layers an image may reference without the registry holding them (image-spec:
 * non-distributable layers, and any layer with `urls` to fetch it from): a
 * manifest naming one is accepted whether or not its blob was pushed.
 */
export function isExternalLayer(l: { mediaType: string; urls?: string[] | undefined }): boolean {
  return (
    l.mediaType.startsWith('application/vnd.oci.image.layer.nondistributable.') ||
    l.mediaType === 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip' ||
    (l.urls !== undefined && l.urls.length > 0)
  );
}

export interface ParsedManifest {
  mediaType: string;
  artifactType: string | null;
  subject: Digest | null;
  annotations: Record<string, string> | null;
  refs: ManifestRef[];
}

/**
 * Validates a manifest body against its media type (Content-Type, or the
 * body's own mediaType) and lists what it references.
 */
export function parseManifest(body: Buffer, contentType: string | undefined): ParsedManifest {
  const depth = jsonDepth(body);
  if (depth > MAX_MANIFEST_DEPTH) throw new OciError(400, 'MANIFEST_INVALID', `manifest nests deeper than ${MAX_MANIFEST_DEPTH} levels`);
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new OciError(400, 'MANIFEST_INVALID', `manifest is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new OciError(400, 'MANIFEST_INVALID', 'manifest must be a JSON object');
  }
  const bodyType = (json as { mediaType?: unknown }).mediaType;
  const headerType = contentType?.split(';')[0]?.trim();
  if (typeof bodyType === 'string' && headerType && bodyType !== headerType) {
    throw new OciError(400, 'MANIFEST_INVALID', `mediaType ${bodyType} does not match Content-Type ${headerType}`);
  }
  const mediaType = headerType || (typeof bodyType === 'string' ? bodyType : '');
  if (!MANIFEST_MEDIA_TYPES.includes(mediaType)) {
    throw new OciError(400, 'MANIFEST_INVALID', `unsupported manifest media type ${JSON.stringify(mediaType)}; accepted: ${MANIFEST_MEDIA_TYPES.join(', ')}`);
  }
  const isIndex = mediaType === MT.ociIndex || mediaType === MT.dockerList;
  const parsed = (isIndex ? imageIndex : imageManifest).safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new OciError(400, 'MANIFEST_INVALID', `invalid manifest: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'schema'}`, parsed.error.issues.slice(0, 5));
  }
  const m = parsed.data as z.infer<typeof imageManifest> & z.infer<typeof imageIndex>;
  const refs: ManifestRef[] = [];
  const seen = new Map<string, ManifestRef>();
  const add = (digest: string, kind: ManifestRef['kind'], optional = false) => {
    const had = seen.get(digest);
    if (had) {
      if (!optional) delete had.optional; // also a required reference
      return;
    }
    const r: ManifestRef = { digest: digest as Digest, kind };
    if (optional) r.optional = true;
    seen.set(digest, r);
    refs.push(r);
  };
  let artifactType: string | null = m.artifactType ?? null;
  if (isIndex) {
    for (const d of m.manifests) add(d.digest, 'manifest');
  } else {
    add(m.config.digest, 'blob');
    for (const l of m.layers) add(l.digest, 'blob', isExternalLayer(l));
    if (artifactType === null && mediaType === MT.ociManifest) artifactType = m.config.mediaType;
  }
  return {
    mediaType,
    artifactType,
    subject: (m.subject?.digest as Digest | undefined) ?? null,
    annotations: m.annotations ?? null,
    refs,
  };
}

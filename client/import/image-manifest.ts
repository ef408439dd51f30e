/**
 * From a tag to the layers of one image: Docker v2 and OCI manifests, and
 * their lists (Docker manifest list, OCI index), which pick one platform
 * (linux/amd64 unless --platform OS/ARCH[/VARIANT]). Every manifest fetched by
 * digest is checked against it.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { SnapyardError } from '../../storage/errors.js';

export const MT_OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MT_OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const MT_DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const MT_DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const MANIFEST_ACCEPT = [MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST].join(', ');
/** Manifests bigger than this are refused (distribution's own limit is 4 MiB). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

const descriptor = z.object({
  mediaType: z.string().optional(),
  digest: z.string().regex(/^sha256:[a-f0-9]{64}$/, 'a sha256 digest'),
  size: z.number().int().nonnegative(),
  platform: z.object({ os: z.string(), architecture: z.string(), variant: z.string().optional() }).optional(),
});
const imageManifest = z.object({ schemaVersion: z.literal(2), mediaType: z.string().optional(), config: descriptor, layers: z.array(descriptor).max(1000) });
const indexManifest = z.object({ schemaVersion: z.literal(2), mediaType: z.string().optional(), manifests: z.array(descriptor).max(10_000) });

export type Descriptor = z.infer<typeof descriptor>;

export interface FetchedManifest {
  bytes: Buffer;
  /** The Content-Type the source gave ('' when it gave none). */
  mediaType: string;
}

export interface ResolvedImage {
  manifestDigest: string;
  layers: Descriptor[];
}

export function sha256Of(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export function parsePlatform(s: string | undefined): Platform {
  if (s === undefined) return { os: 'linux', architecture: 'amd64' };
  const parts = s.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) throw new SnapyardError('INVALID_ARGUMENT', `--platform ${s}: expected OS/ARCH or OS/ARCH/VARIANT`);
  return { os: parts[0]!, architecture: parts[1]!, ...(parts[2] ? { variant: parts[2] } : {}) };
}

function parseJson(m: FetchedManifest, what: string): Record<string, unknown> {
  try {
    const j = JSON.parse(m.bytes.toString('utf8')) as unknown;
    if (typeof j === 'object' && j !== null && !Array.isArray(j)) return j as Record<string, unknown>;
  } catch {
    /* below */
  }
  throw new SnapyardError('INVALID_ARGUMENT', `${what}: the manifest is not a JSON object`);
}

function kindOf(m: FetchedManifest, j: Record<string, unknown>): 'image' | 'index' {
  const mt = (typeof j.mediaType === 'string' ? j.mediaType : m.mediaType.split(';')[0]!.trim()) || '';
  if (mt === MT_OCI_INDEX || mt === MT_DOCKER_LIST || (mt === '' && Array.isArray(j.manifests))) return 'index';
  if (mt === MT_OCI_MANIFEST || mt === MT_DOCKER_MANIFEST || (mt === '' && Array.isArray(j.layers))) return 'image';
  if (j.schemaVersion === 1) throw new SnapyardError('INVALID_ARGUMENT', 'Docker schema 1 manifests are not supported (copy the image with skopeo to convert it)');
  throw new SnapyardError('INVALID_ARGUMENT', `unsupported manifest media type ${JSON.stringify(mt)}`);
}

function schemaError(what: string, e: z.ZodError): SnapyardError {
  const i = e.issues[0];
  return new SnapyardError('INVALID_ARGUMENT', `${what}: invalid manifest: ${i ? `${i.path.join('.') || '(root)'}: ${i.message}` : e.message}`);
}

/**
 * The image `reference` names on the source: follows an index to the one
 * manifest for `platform`. `fetch(reference)` gets a manifest by tag or digest.
 */
export async function resolveImage(fetch: (reference: string) => Promise<FetchedManifest>, reference: string, platform: Platform, what: string): Promise<ResolvedImage> {
  let m = await fetch(reference);
  let digest = sha256Of(m.bytes);
  if (reference.startsWith('sha256:') && digest !== reference) throw new SnapyardError('DIGEST_MISMATCH', `${what}: manifest ${reference} has digest ${digest}`);
  for (let depth = 0; depth < 2; depth++) {
    const j = parseJson(m, what);
    if (kindOf(m, j) === 'image') {
      const p = imageManifest.safeParse(j);
      if (!p.success) throw schemaError(what, p.error);
      return { manifestDigest: digest, layers: p.data.layers };
    }
    const p = indexManifest.safeParse(j);
    if (!p.success) throw schemaError(what, p.error);
    const pick = p.data.manifests.find(
      (d) => d.platform?.os === platform.os && d.platform.architecture === platform.architecture && (platform.variant === undefined || d.platform.variant === platform.variant),
    );
    if (!pick) {
      const have = p.data.manifests.map((d) => (d.platform ? [d.platform.os, d.platform.architecture, d.platform.variant].filter(Boolean).join('/') : '?')).join(', ');
      throw new SnapyardError('NOT_FOUND', `${what}: no image for ${[platform.os, platform.architecture, platform.variant].filter(Boolean).join('/')} in the index (it has: ${have || 'nothing'}; choose one with --platform)`);
    }
    m = await fetch(pick.digest);
    digest = sha256Of(m.bytes);
    if (digest !== pick.digest) throw new SnapyardError('DIGEST_MISMATCH', `${what}: manifest ${pick.digest} has digest ${digest}`);
  }
  throw new SnapyardError('INVALID_ARGUMENT', `${what}: an index points at another index`);
}

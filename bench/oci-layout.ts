/** Wraps files as OCI artifacts in an OCI image layout (for skopeo), without copying them. */
import { createHash } from 'node:crypto';
import { createReadStream, linkSync, copyFileSync, mkdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const EMPTY = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2 };

export async function fileDigest(path: string): Promise<{ digest: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const piece of createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(piece as Buffer);
    size += (piece as Buffer).byteLength;
  }
  return { digest: `sha256:${h.digest('hex')}`, size };
}

function putBlob(layout: string, digest: string, data: Buffer | string): void {
  const p = join(layout, 'blobs', 'sha256', digest.slice(7));
  if (!existsSync(p)) writeFileSync(p, data);
}

/** Adds `file` as a qcow2 artifact tagged `tag` to the layout at `layout` (created if needed). */
export async function addQcow2Artifact(layout: string, tag: string, file: string): Promise<{ manifestDigest: string; layerDigest: string }> {
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const { digest, size } = await fileDigest(file);
  const target = join(layout, 'blobs', 'sha256', digest.slice(7));
  if (!existsSync(target)) {
    try { linkSync(file, target); } catch { copyFileSync(file, target); }
  }
  putBlob(layout, EMPTY.digest, '{}');
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.snapyard.qcow2',
    config: EMPTY,
    layers: [{ mediaType: 'application/vnd.snapyard.qcow2.v1', digest, size, annotations: { 'org.opencontainers.image.title': file.split('/').pop() } }],
  });
  const md = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
  putBlob(layout, md, manifest);
  const indexPath = join(layout, 'index.json');
  const index = existsSync(indexPath)
    ? (JSON.parse((await import('node:fs')).readFileSync(indexPath, 'utf8')) as { manifests: Array<Record<string, unknown>> })
    : { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] as Array<Record<string, unknown>> };
  index.manifests = index.manifests.filter((m) => (m.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'] !== tag);
  index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: Buffer.byteLength(manifest), annotations: { 'org.opencontainers.image.ref.name': tag } });
  writeFileSync(indexPath, JSON.stringify(index));
  return { manifestDigest: md, layerDigest: digest };
}

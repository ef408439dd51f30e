/**
 * Container images "like the old ones": a qcow2 packed as a member of a tar
 * layer (gzip, zstd or uncompressed), with an image config and an OCI
 * manifest, written as an OCI image layout; and a skopeo with a private
 * policy, registries.conf and auth file to copy them around.
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { compress } from 'zstd-napi';
import { runTool } from './qcow2-fixtures.js';

export type Compression = 'gzip' | 'zstd' | 'none';

export const LAYER_TYPES: Record<Compression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

export const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export interface TarMember {
  name: string;
  data: Buffer;
  /** What the header claims (default data.length): a lie makes a hostile tar. */
  claimedSize?: number;
  /** A directory entry (data ignored), as image builders write before the files in it. */
  directory?: boolean;
}

/** A tar archive of the members (each a regular file). */
export async function tarOf(members: TarMember[]): Promise<Buffer> {
  const p = pack();
  const parts: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) parts.push(c as Buffer);
  })();
  for (const m of members) {
    const mtime = new Date(900_000_000_000);
    if (m.directory) await new Promise<void>((ok, fail) => p.entry({ name: m.name, type: 'directory', mtime }, (e) => (e ? fail(e) : ok())));
    else await new Promise<void>((ok, fail) => p.entry({ name: m.name, size: m.data.length, mtime }, m.data, (e) => (e ? fail(e) : ok())));
  }
  p.finalize();
  await done;
  let tar = Buffer.concat(parts);
  for (const m of members) {
    if (m.claimedSize === undefined) continue;
    // Rewrite the size field (octal, offset 124, 12 bytes) and the header checksum of that member.
    const at = findHeader(tar, m.name);
    const h = Buffer.from(tar.subarray(at, at + 512));
    h.write(`${m.claimedSize.toString(8).padStart(11, '0')}\0`, 124, 'ascii');
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
    tar = Buffer.concat([tar.subarray(0, at), h, tar.subarray(at + 512)]);
  }
  return tar;
}

function findHeader(tar: Buffer, name: string): number {
  for (let at = 0; at + 512 <= tar.length; at += 512) {
    if (tar.subarray(at, at + 100).toString('utf8').replace(/\0.*$/s, '') === name) return at;
  }
  throw new Error(`no header for ${name}`);
}

export function compressLayer(tar: Buffer, c: Compression): Buffer {
  if (c === 'gzip') return gzipSync(tar);
  if (c === 'zstd') return compress(tar);
  return tar;
}

export interface OldImage {
  tag: string;
  /** The layer's uncompressed tar. */
  tar: Buffer;
  compression: Compression;
  /** The layer's bytes as stored, when not compressLayer(tar) (a hostile layer). */
  layer?: Buffer;
}

/**
 * Writes (or adds to) an OCI image layout at `dir`: one image per entry, each
 * with a config and a single layer (the bytes given, any compression), tagged.
 */
export async function writeLayout(dir: string, images: OldImage[]): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const put = async (b: Buffer) => {
    const d = sha256(b);
    await writeFile(join(dir, 'blobs', 'sha256', d.slice(7)), b);
    return d;
  };
  const manifests = [];
  for (const img of images) {
    const layer = img.layer ?? compressLayer(img.tar, img.compression);
    const layerDigest = await put(layer);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(img.tar)] } }));
    const configDigest = await put(config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
        layers: [{ mediaType: LAYER_TYPES[img.compression], digest: layerDigest, size: layer.length }],
      }),
    );
    const md = await put(manifest);
    manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: md, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': img.tag } });
  }
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
}

/** skopeo with nothing from the machine's configuration (policy accepts anything). */
export async function skopeoIn(work: string): Promise<(...args: string[]) => Promise<string>> {
  await mkdir(join(work, 'skopeo-tmp'), { recursive: true });
  await writeFile(join(work, 'policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(join(work, 'registries.conf'), '');
  const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: join(work, 'registries.conf'), REGISTRY_AUTH_FILE: join(work, 'skopeo-auth.json'), TMPDIR: join(work, 'skopeo-tmp') };
  return async (...args: string[]) => (await runTool('skopeo', ['--policy', join(work, 'policy.json'), '--tmpdir', join(work, 'skopeo-tmp'), ...args], { env })).stdout;
}

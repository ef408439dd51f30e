/**
 * Images packaged the old way (a qcow2 as the only member of a tar layer,
 * gzip or uncompressed, with an image config and an OCI manifest) written as
 * an OCI image layout for skopeo, streamed from the file: the bench corpus's
 * images are a GiB each, too big for test/helpers/old-images.ts's in-memory
 * buffers. Same layout shape as that helper (whose layer media types it uses).
 */
import { createHash, type Hash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack } from 'tar-stream';
import { LAYER_TYPES } from '../test/helpers/old-images.js';

export type LayerCompression = 'gzip' | 'none';

const digestOf = (h: Hash) => `sha256:${h.digest('hex')}`;

/** A pass-through that hashes (and counts) what crosses it. */
function tap(h: Hash, count?: { n: number }): Transform {
  return new Transform({
    transform(c: Buffer, _enc, done) {
      h.update(c);
      if (count) count.n += c.length;
      done(null, c);
    },
  });
}

/** Streams FILE as member MEMBER of a tar (compressed as asked) into the layout's blobs; the layer and the tar's digests. */
async function writeLayer(layout: string, file: string, member: string, compression: LayerCompression): Promise<{ digest: string; size: number; diffId: string }> {
  const p = pack();
  const produce = (async () => {
    let sink!: ReturnType<typeof p.entry>;
    const entryDone = new Promise<void>((ok, fail) => {
      sink = p.entry({ name: member, size: statSync(file).size, mode: 0o644, mtime: new Date(900_000_000_000) }, (e) => (e ? fail(e) : ok()));
    });
    for await (const c of createReadStream(file, { highWaterMark: 1 << 20 })) {
      if (!sink.write(c as Buffer)) await once(sink, 'drain');
    }
    sink.end(null);
    await entryDone;
    p.finalize();
  })();
  const tarHash = createHash('sha256');
  const layerHash = createHash('sha256');
  const size = { n: 0 };
  const tmp = join(layout, 'blobs', `.layer-${process.pid}-${Date.now()}`);
  const stages: NodeJS.ReadWriteStream[] = [tap(tarHash), ...(compression === 'gzip' ? [createGzip({ level: 6 })] : []), tap(layerHash, size)];
  await Promise.all([produce, pipeline([p as unknown as NodeJS.ReadableStream, ...stages, createWriteStream(tmp)])]);
  const digest = digestOf(layerHash);
  renameSync(tmp, join(layout, 'blobs', 'sha256', digest.slice(7)));
  return { digest, size: size.n, diffId: digestOf(tarHash) };
}

function putJson(layout: string, doc: unknown): { digest: string; size: number } {
  const b = Buffer.from(JSON.stringify(doc));
  const digest = `sha256:${createHash('sha256').update(b).digest('hex')}`;
  writeFileSync(join(layout, 'blobs', 'sha256', digest.slice(7)), b);
  return { digest, size: b.length };
}

/**
 * Adds an image tagged TAG to the OCI layout at LAYOUT (created if needed):
 * one layer, a tar holding FILE as MEMBER (default snapshot.qcow2).
 * Returns the layer's size in bytes.
 */
export async function addOldImage(layout: string, tag: string, file: string, compression: LayerCompression, member = 'snapshot.qcow2'): Promise<number> {
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const layer = await writeLayer(layout, file, member, compression);
  const config = putJson(layout, { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [layer.diffId] } });
  const manifest = putJson(layout, {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: LAYER_TYPES[compression], digest: layer.digest, size: layer.size }],
  });
  const indexPath = join(layout, 'index.json');
  const index = existsSync(indexPath)
    ? (JSON.parse(readFileSync(indexPath, 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> })
    : { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] };
  index.manifests = index.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] !== tag);
  index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } } as never);
  writeFileSync(indexPath, JSON.stringify(index));
  return layer.size;
}

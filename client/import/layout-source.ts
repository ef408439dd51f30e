/**
 * Images in an OCI image layout directory (oci:DIR[:TAG]), or in a tar of
 * one (oci-archive:FILE[:TAG], unpacked to a temporary directory first).
 * Tags are the index's org.opencontainers.image.ref.name annotations.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { SnapyardError } from '../../storage/errors.js';
import { unpackArchive } from './archive.js';
import { MAX_MANIFEST_BYTES, resolveImage, type FetchedManifest, type Platform } from './image-manifest.js';
import type { ImageSource, SourceImage } from './image-source.js';

interface IndexEntry {
  mediaType?: string;
  digest: string;
  annotations?: Record<string, string>;
}

const REF_NAME = 'org.opencontainers.image.ref.name';

export class LayoutSource implements ImageSource {
  private constructor(
    readonly name: string,
    private readonly dir: string,
    readonly reference: string | null,
    private readonly entries: IndexEntry[],
    private readonly cleanup: string | null,
  ) {}

  static async open(name: string, dir: string, reference: string | null, cleanup: string | null = null): Promise<LayoutSource> {
    let entries: IndexEntry[];
    try {
      const j = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests?: unknown };
      if (!Array.isArray(j.manifests)) throw new Error('no "manifests" list');
      entries = (j.manifests as IndexEntry[]).filter((e) => typeof e === 'object' && e !== null && typeof e.digest === 'string');
    } catch (e) {
      if (cleanup) await rm(cleanup, { recursive: true, force: true });
      throw new SnapyardError('INVALID_ARGUMENT', `${name}: not an OCI image layout (index.json: ${(e as Error).message})`);
    }
    return new LayoutSource(name, dir, reference, entries, cleanup);
  }

  static async openArchive(name: string, file: string, reference: string | null, tmpDir: string): Promise<LayoutSource> {
    const dir = await mkdtemp(join(tmpDir, 'snapyard-import-archive-'));
    try {
      await unpackArchive(file, dir);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
    return LayoutSource.open(name, dir, reference, dir);
  }

  private blobPath(digest: string): string {
    if (!/^sha256:[a-f0-9]{64}$/.test(digest)) throw new SnapyardError('INVALID_ARGUMENT', `${this.name}: ${JSON.stringify(digest)} is not a sha256 digest`);
    return join(this.dir, 'blobs', 'sha256', digest.slice(7));
  }

  private async manifestBlob(digest: string, mediaType: string): Promise<FetchedManifest> {
    const p = this.blobPath(digest);
    const st = await stat(p).catch(() => null);
    if (!st) throw new SnapyardError('NOT_FOUND', `${this.name}: blob ${digest} is missing`);
    if (st.size > MAX_MANIFEST_BYTES) throw new SnapyardError('LIMIT_EXCEEDED', `${this.name}: manifest ${digest} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    return { bytes: await readFile(p), mediaType };
  }

  async tags(): Promise<string[]> {
    return [...new Set(this.entries.map((e) => e.annotations?.[REF_NAME]).filter((t): t is string => typeof t === 'string'))];
  }

  private entryFor(reference: string | null): IndexEntry {
    if (reference === null) {
      if (this.entries.length === 1) return this.entries[0]!;
      throw new SnapyardError('INVALID_ARGUMENT', `${this.name} holds ${this.entries.length} images: name one (${this.name}:TAG)`);
    }
    const e = this.entries.find((x) => x.annotations?.[REF_NAME] === reference || x.digest === reference);
    if (!e) throw new SnapyardError('NOT_FOUND', `${this.name}: no image tagged ${reference}`);
    return e;
  }

  async image(reference: string | null, platform: Platform): Promise<SourceImage> {
    const top = this.entryFor(reference);
    const fetch = (r: string) => this.manifestBlob(r, r === top.digest ? top.mediaType ?? '' : '');
    const img = await resolveImage(fetch, top.digest, platform, `${this.name}:${reference ?? top.digest}`);
    return {
      manifestDigest: img.manifestDigest,
      layers: img.layers.map((d) => ({ digest: d.digest, label: d.digest, open: () => this.layerStream(d.digest) })),
    };
  }

  private async layerStream(digest: string): Promise<Readable> {
    const p = this.blobPath(digest);
    if (!(await stat(p).catch(() => null))) throw new SnapyardError('NOT_FOUND', `${this.name}: layer ${digest} is missing`);
    return createReadStream(p);
  }

  async close(): Promise<void> {
    if (this.cleanup) await rm(this.cleanup, { recursive: true, force: true });
  }
}

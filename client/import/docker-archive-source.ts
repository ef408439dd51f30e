/**
 * Images in `docker save` output (docker-archive:FILE[:REPO:TAG]), unpacked to
 * a temporary directory: manifest.json lists each image's config, RepoTags
 * and layer files. Layers there are uncompressed tars, so each is checked
 * against its config's rootfs.diff_ids entry.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { join, normalize, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { SnapyardError } from '../../storage/errors.js';
import { unpackArchive } from './archive.js';
import { MAX_MANIFEST_BYTES, sha256Of, type Platform } from './image-manifest.js';
import type { ImageSource, SourceImage } from './image-source.js';

interface SaveEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

function tagOf(repoTag: string): string {
  return repoTag.slice(repoTag.lastIndexOf(':') + 1);
}

export class DockerArchiveSource implements ImageSource {
  private constructor(
    readonly name: string,
    private readonly dir: string,
    readonly reference: string | null,
    private readonly entries: SaveEntry[],
  ) {}

  static async open(name: string, file: string, reference: string | null, tmpDir: string): Promise<DockerArchiveSource> {
    const dir = await mkdtemp(join(tmpDir, 'snapyard-import-archive-'));
    try {
      await unpackArchive(file, dir);
      let entries: SaveEntry[];
      try {
        const j = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as unknown;
        if (!Array.isArray(j)) throw new Error('not a list');
        entries = j.filter((e): e is SaveEntry => typeof e === 'object' && e !== null && typeof e.Config === 'string' && Array.isArray(e.Layers) && e.Layers.every((l: unknown) => typeof l === 'string'));
        if (entries.length === 0) throw new Error('no images');
      } catch (e) {
        throw new SnapyardError('INVALID_ARGUMENT', `${name}: not a docker-archive (manifest.json: ${(e as Error).message})`);
      }
      return new DockerArchiveSource(name, dir, reference, entries);
    } catch (e) {
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  private inside(rel: string): string {
    const n = normalize(rel);
    if (n.startsWith('/') || n.split(sep).includes('..')) throw new SnapyardError('INVALID_ARGUMENT', `${this.name}: path ${JSON.stringify(rel)} leaves the archive`);
    return join(this.dir, n);
  }

  async tags(): Promise<string[]> {
    return [...new Set(this.entries.flatMap((e) => (e.RepoTags ?? []).map(tagOf)))];
  }

  private entryFor(reference: string | null): SaveEntry {
    if (reference === null) {
      if (this.entries.length === 1) return this.entries[0]!;
      throw new SnapyardError('INVALID_ARGUMENT', `${this.name} holds ${this.entries.length} images: name one (docker-archive:FILE:REPO:TAG)`);
    }
    const e = this.entries.find((x) => (x.RepoTags ?? []).some((t) => t === reference || tagOf(t) === reference));
    if (!e) throw new SnapyardError('NOT_FOUND', `${this.name}: no image tagged ${reference}`);
    return e;
  }

  async image(reference: string | null, _platform: Platform): Promise<SourceImage> {
    const e = this.entryFor(reference);
    const configPath = this.inside(e.Config);
    const st = await stat(configPath).catch(() => null);
    if (!st || st.size > MAX_MANIFEST_BYTES) throw new SnapyardError('INVALID_ARGUMENT', `${this.name}: config ${e.Config} is missing or too large`);
    const configBytes = await readFile(configPath);
    let diffIds: unknown[] = [];
    try {
      const c = JSON.parse(configBytes.toString('utf8')) as { rootfs?: { diff_ids?: unknown } };
      if (Array.isArray(c.rootfs?.diff_ids)) diffIds = c.rootfs.diff_ids;
    } catch {
      throw new SnapyardError('INVALID_ARGUMENT', `${this.name}: config ${e.Config} is not JSON`);
    }
    return {
      manifestDigest: sha256Of(configBytes),
      layers: e.Layers.map((l, i) => {
        const d = diffIds[i];
        return { digest: typeof d === 'string' ? d : null, label: l, open: () => this.layerStream(l) };
      }),
    };
  }

  private async layerStream(rel: string): Promise<Readable> {
    const p = this.inside(rel);
    if (!(await stat(p).catch(() => null))) throw new SnapyardError('NOT_FOUND', `${this.name}: layer ${rel} is missing`);
    return createReadStream(p);
  }

  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}

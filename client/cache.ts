/**
 * The client's local cache (`--cache DIR`, default $SNAPYARD_CACHE or
 * ~/.cache/snapyard): a chunk store like the server's, plus what the client
 * knows about files and snapshots.
 *
 *   DIR/chunks/          LocalChunkStore (packs + index.db): every chunk a pull downloaded
 *   DIR/indexes/<hex>    chunk indexes by blob digest (to read index differences against)
 *   DIR/state.json       files: path -> {dev, ino, size, mtimeMs, digest} (a file's digest
 *                        and index are computed once); held: snapshots whose chunks
 *                        are all in the cache, or in the cache plus a base file
 *
 * Downloaded chunks are flushed after every batch, so a pull killed mid-way
 * finds them on the next run and does not fetch them again. Files are
 * written to a temporary name and renamed. One process at a time per cache.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { hexOf, type Digest } from '../storage/digest.js';
import { LocalChunkStore } from '../storage/local-chunk-store.js';

interface FileEntry {
  dev: number;
  ino: number;
  size: number;
  mtimeMs: number;
  digest: Digest;
}

export interface HeldSnapshot {
  blob: Digest;
  /** The base file's blob whose chunks complete it (null: the cache alone). */
  base: Digest | null;
}

interface State {
  files: Record<string, FileEntry>;
  held: HeldSnapshot[];
}

export function defaultCacheDir(): string {
  return process.env.SNAPYARD_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'snapyard');
}

export class ClientCache {
  readonly chunks: LocalChunkStore;
  private state: State;

  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'indexes'), { recursive: true });
    this.chunks = new LocalChunkStore({ root: join(dir, 'chunks'), workers: 2 });
    const p = join(dir, 'state.json');
    this.state = { files: {}, held: [] };
    if (existsSync(p)) {
      try {
        const s = JSON.parse(readFileSync(p, 'utf8')) as State;
        this.state = { files: s.files ?? {}, held: s.held ?? [] };
      } catch {
        /* a damaged state file only costs recomputation */
      }
    }
  }

  /** The digest recorded for a file, if the file has not changed since. */
  fileDigest(path: string): Digest | null {
    const e = this.state.files[resolve(path)];
    if (!e) return null;
    const st = statSync(path);
    return st.dev === e.dev && st.ino === e.ino && st.size === e.size && st.mtimeMs === e.mtimeMs ? e.digest : null;
  }

  rememberFile(path: string, digest: Digest): void {
    const st = statSync(path);
    this.state.files[resolve(path)] = { dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, digest };
    this.save();
  }

  readIndex(blob: Digest): Buffer | null {
    const p = join(this.dir, 'indexes', hexOf(blob));
    return existsSync(p) ? readFileSync(p) : null;
  }

  writeIndex(blob: Digest, bytes: Buffer): void {
    const p = join(this.dir, 'indexes', hexOf(blob));
    writeFileSync(`${p}.tmp`, bytes);
    renameSync(`${p}.tmp`, p);
  }

  /** Snapshots the client can claim to hold, given the base file it has now. */
  held(base: Digest | null): Digest[] {
    return this.state.held.filter((h) => h.base === null || h.base === base).map((h) => h.blob);
  }

  addHeld(blob: Digest, base: Digest | null): void {
    this.state.held = [{ blob, base }, ...this.state.held.filter((h) => !(h.blob === blob && h.base === base))].slice(0, 32);
    this.save();
  }

  private save(): void {
    const p = join(this.dir, 'state.json');
    writeFileSync(`${p}.tmp`, JSON.stringify(this.state));
    renameSync(`${p}.tmp`, p);
  }

  async close(): Promise<void> {
    await this.chunks.close();
  }
}

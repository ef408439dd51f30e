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
 * written to a temporary name and renamed. Several processes may share a
 * cache (the pods of a node): chunks go to per-process packs under one SQLite
 * index (WAL), and state.json is changed under a lock, merging what the
 * others wrote meanwhile.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import lockfile from 'proper-lockfile';
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
  /** What this process changed since the last save (merged into what others wrote). */
  private readonly changedFiles = new Set<string>();

  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'indexes'), { recursive: true });
    this.chunks = new LocalChunkStore({ root: join(dir, 'chunks'), workers: 2 });
    this.state = readState(join(dir, 'state.json'));
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
    this.changedFiles.add(resolve(path));
    this.save();
  }

  readIndex(blob: Digest): Buffer | null {
    const p = join(this.dir, 'indexes', hexOf(blob));
    return existsSync(p) ? readFileSync(p) : null;
  }

  writeIndex(blob: Digest, bytes: Buffer): void {
    const p = join(this.dir, 'indexes', hexOf(blob));
    const tmp = `${p}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, bytes);
    renameSync(tmp, p);
  }

  /** Snapshots the client can claim to hold, given the base file it has now. */
  held(base: Digest | null): Digest[] {
    return this.state.held.filter((h) => h.base === null || h.base === base).map((h) => h.blob);
  }

  addHeld(blob: Digest, base: Digest | null): void {
    this.state.held = [{ blob, base }, ...this.state.held.filter((h) => !(h.blob === blob && h.base === base))].slice(0, 32);
    this.save();
  }

  /** Writes the state, merged with what other processes saved meanwhile, under the cache's state lock. */
  private save(): void {
    const p = join(this.dir, 'state.json');
    withStateLock(p, () => {
      const disk = readState(p);
      const files = { ...disk.files };
      for (const f of this.changedFiles) if (this.state.files[f]) files[f] = this.state.files[f];
      const held = [...this.state.held, ...disk.held].filter((h, i, a) => a.findIndex((x) => x.blob === h.blob && x.base === h.base) === i).slice(0, 32);
      this.state = { files, held };
      this.changedFiles.clear();
      const tmp = `${p}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(this.state));
      renameSync(tmp, p);
    });
  }

  async close(): Promise<void> {
    await this.chunks.close();
  }
}

function readState(p: string): State {
  if (!existsSync(p)) return { files: {}, held: [] };
  try {
    const s = JSON.parse(readFileSync(p, 'utf8')) as State;
    return { files: s.files ?? {}, held: s.held ?? [] };
  } catch {
    return { files: {}, held: [] }; // a damaged state file only costs recomputation
  }
}

/** Runs `fn` holding `<p>.lock` (waits for other processes of the node; a lock left by a dead one goes stale after 10 s). */
function withStateLock(p: string, fn: () => void): void {
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; ; i++) {
    let release: (() => void) | null = null;
    try {
      release = lockfile.lockSync(p, { realpath: false, lockfilePath: `${p}.lock`, stale: 10_000 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ELOCKED' || i > 600) throw e;
      Atomics.wait(sleeper, 0, 0, 20 + Math.random() * 30);
      continue;
    }
    try {
      fn();
    } finally {
      release();
    }
    return;
  }
}

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
 * Downloaded chunks are flushed after a fetch's first batch and then every
 * 64 MiB (client/fetch.ts), so a pull killed mid-way finds them on the next
 * run and does not fetch them again. Files are
 * written to a temporary name and renamed. Several processes may share a
 * cache (the pods of a node): chunks go to per-process packs under one SQLite
 * index (WAL), and state.json is changed under a lock, merging what the
 * others wrote meanwhile.
 *
 * Size bound (`--cache-max`, cache-evict.ts): every process using the cache
 * registers itself in state.json `users` (its lease: DIR/users/<id>.lock,
 * kept fresh while it lives) with the blobs it needs (the snapshots it
 * claims to hold, the indexes it reads); held snapshots carry their last use
 * time. At the end of a command the least recently used snapshots' chunks
 * are evicted, never those of a live user's blobs.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import lockfile from 'proper-lockfile';
import { homedir, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { hexOf, type Digest } from '../storage/digest.js';
import { LocalChunkStore } from '../storage/chunks/local-chunk-store.js';
import { SnapyardError } from '../storage/errors.js';
import { evictCache, type EvictSummary } from './cache-evict.js';

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
  /** Last time a pull or prefetch produced it (ms; absent in older state files: oldest). */
  usedMs?: number;
}

/** A process using the cache (state.json `users`): alive while its lease is fresh. */
export interface CacheUser {
  pid: number;
  host: string;
  /** Pack names its chunk writers use (`p<pid>-`): eviction leaves them alone. */
  packPrefix: string;
  /** Blobs whose chunks it may read: eviction keeps them. */
  blobs: Digest[];
  sinceMs: number;
}

export interface State {
  files: Record<string, FileEntry>;
  held: HeldSnapshot[];
  users: Record<string, CacheUser>;
}

/** A lease older than this (its process died without releasing it) no longer protects anything. */
export const LEASE_STALE_MS = 60_000;
/** The marker an eviction holds while it rewrites packs (new users wait for it). */
export const REWRITE_STALE_MS = 30_000;
const MAX_HELD = 32;

export function defaultCacheDir(): string {
  return process.env.SNAPYARD_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'snapyard');
}

export class ClientCache {
  readonly chunks: LocalChunkStore;
  private state: State;
  /** What this process changed since the last save (merged into what others wrote). */
  private readonly changedFiles = new Set<string>();

  /** Held snapshots this process added or used since the last save. */
  private readonly changedHeld: HeldSnapshot[] = [];
  /** This process's entry in `users` (null once closed). */
  private user: CacheUser | null;
  readonly userId = `${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  private readonly releaseLease: () => void;
  /** What the eviction at close() did (null: no bound, or not closed yet). */
  evicted: EvictSummary | null = null;

  /** `maxBytes`: the size bound (`--cache-max`) enforced when the cache is closed. */
  constructor(readonly dir: string, private readonly opts: { maxBytes?: number } = {}) {
    mkdirSync(join(dir, 'indexes'), { recursive: true });
    mkdirSync(join(dir, 'users'), { recursive: true });
    this.releaseLease = lockfile.lockSync(this.leasePath(this.userId), { realpath: false, lockfilePath: this.leasePath(this.userId), stale: LEASE_STALE_MS, onCompromised: () => {} });
    this.user = null;
    this.state = { files: {}, held: [], users: {} };
    try {
      this.register();
      this.chunks = new LocalChunkStore({ root: join(dir, 'chunks'), workers: 2 });
    } catch (e) {
      this.releaseLease();
      throw e;
    }
  }

  leasePath(id: string): string {
    return join(this.dir, 'users', `${id}.lock`);
  }

  /** The user is alive: its lease is held and fresh. */
  userAlive(id: string): boolean {
    try {
      return lockfile.checkSync(this.leasePath(id), { realpath: false, stale: LEASE_STALE_MS, lockfilePath: this.leasePath(id) });
    } catch {
      return false;
    }
  }

  /** Adds this process to `users`, waiting while an eviction rewrites packs (cache-evict.ts). */
  private register(): void {
    const marker = join(this.dir, 'rewrite');
    const sleeper = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; ; i++) {
      let busy = false;
      this.mutateState((s) => {
        busy = lockfile.checkSync(marker, { realpath: false, lockfilePath: `${marker}.lock`, stale: REWRITE_STALE_MS });
        if (busy) return false;
        this.user = { pid: process.pid, host: hostname(), packPrefix: `p${process.pid}-`, blobs: [], sinceMs: Date.now() };
        s.users[this.userId] = this.user;
        return true;
      });
      if (!busy) return;
      if (i > 60_000) throw new SnapyardError('BUSY', `the cache ${this.dir} has been compacting for over 10 minutes`);
      Atomics.wait(sleeper, 0, 0, 10);
    }
  }

  /** Records that this process may read these blobs' chunks (eviction keeps them while it lives). */
  private use(blobs: Digest[]): void {
    if (!this.user || blobs.every((b) => this.user!.blobs.includes(b))) return;
    this.user.blobs = [...new Set([...this.user.blobs, ...blobs])];
    this.save();
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
    this.use([blob]);
    const p = join(this.dir, 'indexes', hexOf(blob));
    const tmp = `${p}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    writeFileSync(tmp, bytes);
    renameSync(tmp, p);
  }

  /**
   * Snapshots the client can claim to hold, given the base file it has now
   * (read afresh: an eviction may have dropped some); they are registered as
   * needed by this process, so no eviction takes their chunks while it lives.
   */
  held(base: Digest | null): Digest[] {
    let out: Digest[] = [];
    this.mutateState((s) => {
      out = s.held.filter((h) => h.base === null || h.base === base).map((h) => h.blob);
      if (!this.user) return false;
      this.user.blobs = [...new Set([...this.user.blobs, ...out])];
      return true;
    });
    return out;
  }

  addHeld(blob: Digest, base: Digest | null): void {
    this.changedHeld.push({ blob, base, usedMs: Date.now() });
    this.save();
  }

  /** Writes the state, merged with what other processes saved meanwhile, under the cache's state lock. */
  private save(): void {
    this.mutateState(() => true);
  }

  /**
   * Runs `fn` on the state as on disk merged with this process's changes,
   * under the cache's state lock; writes it back when `fn` returns true.
   * (cache-evict.ts changes `held` through this; it must stay synchronous.)
   */
  mutateState(fn: (s: State) => boolean): void {
    const p = join(this.dir, 'state.json');
    withStateLock(p, () => {
      const disk = readState(p);
      const files = { ...disk.files };
      for (const f of this.changedFiles) if (this.state.files[f]) files[f] = this.state.files[f];
      const held = [...this.changedHeld.reverse(), ...disk.held]
        .filter((h, i, a) => a.findIndex((x) => x.blob === h.blob && x.base === h.base) === i)
        .sort((a, b) => (b.usedMs ?? 0) - (a.usedMs ?? 0))
        .slice(0, MAX_HELD);
      const users = { ...disk.users };
      if (this.user) users[this.userId] = this.user;
      else delete users[this.userId];
      for (const [id, u] of Object.entries(users)) if (id !== this.userId && u.sinceMs < Date.now() - LEASE_STALE_MS && !this.userAlive(id)) delete users[id];
      const dirty = this.changedFiles.size > 0 || this.changedHeld.length > 0 || JSON.stringify(users) !== JSON.stringify(disk.users);
      this.state = { files, held, users };
      this.changedFiles.clear();
      this.changedHeld.length = 0;
      if (!fn(this.state) && !dirty) return;
      const tmp = `${p}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(this.state));
      renameSync(tmp, p);
    });
  }

  /** Evicts down to the bound if one is set, leaves `users`, closes the chunk store, releases the lease. */
  async close(): Promise<void> {
    try {
      if (this.opts.maxBytes !== undefined && this.user) {
        this.user.blobs = []; // this command is done: what it read is only held now
        this.save();
        this.evicted = await evictCache(this, this.opts.maxBytes);
      }
    } finally {
      try {
        this.user = null;
        this.save();
        await this.chunks.close();
      } finally {
        this.releaseLease();
      }
    }
  }
}

function readState(p: string): State {
  const empty = (): State => ({ files: {}, held: [], users: {} });
  if (!existsSync(p)) return empty();
  try {
    const s = JSON.parse(readFileSync(p, 'utf8')) as Partial<State>;
    return { files: s.files ?? {}, held: s.held ?? [], users: s.users ?? {} };
  } catch {
    return empty(); // a damaged state file only costs recomputation
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

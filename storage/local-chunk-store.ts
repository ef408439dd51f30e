import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { readFile, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ChunkCodec } from './chunk-codec.js';
import type { AddResult, ChunkStore, PrunableChunkStore } from './chunk-store.js';
import { digestFromHex, type Digest } from './digest.js';
import { ChunkMissingError, SnapyardError } from './errors.js';
import { addChunkSync, chunkPath, tmpDir } from './local-chunk-files.js';
import { WorkerPool } from './worker-pool.js';
import type { ChunkTask } from './chunk-worker.js';

export interface LocalChunkStoreOptions {
  /** Directory of the store (layout: local-chunk-files.ts). */
  root: string;
  /** zstd level for new chunks (default 3). */
  level?: number;
  /** Worker threads for add/put (default 2; 0 = inline on the caller's thread). */
  workers?: number;
}

/** A chunk store on local disk. See local-chunk-files.ts for the layout. */
export class LocalChunkStore implements ChunkStore, PrunableChunkStore {
  readonly root: string;
  private readonly codec: ChunkCodec;
  private readonly pool: WorkerPool<ChunkTask, AddResult> | null;

  constructor(opts: LocalChunkStoreOptions) {
    this.root = opts.root;
    const level = opts.level ?? 3;
    this.codec = new ChunkCodec(level);
    mkdirSync(join(this.root, 'chunks'), { recursive: true });
    mkdirSync(tmpDir(this.root), { recursive: true });
    // Left-over partial writes of a crashed process are never referenced.
    for (const f of readdirSync(tmpDir(this.root))) rmSync(join(tmpDir(this.root), f), { force: true });
    const workers = opts.workers ?? 2;
    this.pool = workers > 0 ? new WorkerPool(new URL(import.meta.url.endsWith('.ts') ? './chunk-worker.ts' : './chunk-worker.js', import.meta.url), workers, { root: this.root, level }) : null;
  }

  toString(): string {
    return `local:${this.root}`;
  }

  async has(digest: Digest): Promise<boolean> {
    try {
      await stat(chunkPath(this.root, digest));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  async getStored(digest: Digest): Promise<Buffer> {
    try {
      return await readFile(chunkPath(this.root, digest));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new ChunkMissingError(digest);
      throw e;
    }
  }

  async get(digest: Digest): Promise<Buffer> {
    return this.codec.decode(await this.getStored(digest), digest);
  }

  async add(raw: Uint8Array): Promise<AddResult> {
    return this.store(raw, undefined);
  }

  async put(digest: Digest, raw: Uint8Array): Promise<AddResult> {
    const r = await this.store(raw, digest);
    if (r.digest !== digest) {
      throw new SnapyardError('DIGEST_MISMATCH', `chunk content hashes to ${r.digest}, not ${digest}`);
    }
    return r;
  }

  private async store(raw: Uint8Array, expect: Digest | undefined): Promise<AddResult> {
    if (!this.pool) return addChunkSync(this.root, this.codec, raw, expect);
    // Hand the worker its own copy, transferred (cloning a view would copy its whole backing buffer).
    const own = new Uint8Array(raw);
    const task: ChunkTask = expect ? { raw: own, expect } : { raw: own };
    return this.pool.run(task, [own.buffer as ArrayBuffer]);
  }

  async *list(): AsyncIterable<{ digest: Digest; storedSize: number; mtimeMs: number }> {
    const base = join(this.root, 'chunks');
    for (const dir of (await readdir(base)).sort()) {
      for (const name of (await readdir(join(base, dir))).sort()) {
        if (!/^[a-f0-9]{64}$/.test(name)) continue;
        try {
          const st = await stat(join(base, dir, name));
          yield { digest: digestFromHex(name), storedSize: st.size, mtimeMs: st.mtimeMs };
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        }
      }
    }
  }

  async remove(digest: Digest): Promise<void> {
    try {
      await unlink(chunkPath(this.root, digest));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}

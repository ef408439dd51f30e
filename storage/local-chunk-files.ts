import { mkdirSync, openSync, writeSync, closeSync, renameSync, utimesSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ChunkCodec } from './chunk-codec.js';
import { sha256, hexOf, type Digest } from './digest.js';
import type { AddResult } from './chunk-store.js';

/**
 * On-disk layout of a local chunk store (the one place it is written down):
 *
 *   <root>/chunks/<hex[0..3]>/<hex>   a chunk in its stored form (chunk-codec.ts), named
 *                                     by the 64 hex digits of the sha256 of its raw bytes
 *   <root>/tmp/<random>.part          a chunk being written; renamed into place when whole
 *
 * A chunk file appears only by rename, so a reader sees all of it or nothing; a
 * crash leaves at most *.part files (removed at open) and unreferenced chunks
 * (collected by GC). Adding a chunk that exists refreshes its mtime, which GC's
 * grace period reads.
 */
export function chunkPath(root: string, digest: Digest): string {
  const hex = hexOf(digest);
  return join(root, 'chunks', hex.slice(0, 3), hex);
}

export function tmpDir(root: string): string {
  return join(root, 'tmp');
}

/**
 * Synchronous add (hash, dedup, compress, write-then-rename). Runs inside chunk
 * workers, or inline when a store has no workers.
 */
export function addChunkSync(root: string, codec: ChunkCodec, raw: Uint8Array, expect?: Digest): AddResult {
  const digest = sha256(raw);
  if (expect !== undefined && expect !== digest) {
    return { digest, size: raw.byteLength, written: false, storedSize: -1 };
  }
  const path = chunkPath(root, digest);
  try {
    const st = statSync(path);
    const now = new Date();
    utimesSync(path, now, now);
    return { digest, size: raw.byteLength, written: false, storedSize: st.size };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const stored = codec.encode(raw);
  const tmp = join(tmpDir(root), `${randomBytes(12).toString('hex')}.part`);
  const fd = openSync(tmp, 'wx');
  try {
    let off = 0;
    while (off < stored.byteLength) off += writeSync(fd, stored, off, stored.byteLength - off);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(join(path, '..'), { recursive: true });
    try {
      renameSync(tmp, path);
    } catch (e2) {
      try { unlinkSync(tmp); } catch { /* already gone */ }
      throw e2;
    }
  }
  return { digest, size: raw.byteLength, written: true, storedSize: stored.byteLength };
}

/**
 * Finds the disk image inside one image layer, streaming: the layer's bytes
 * are hashed as they arrive (the digest is checked when the last byte is in),
 * decompressed (gzip, zstd or none, told apart by their magic bytes), parsed
 * as a tar stream, and only the member chosen is written, to a temporary
 * file. Memory stays at a few buffers whatever the layer's size; the output
 * is bounded by `maxBytes` (a gzip or zstd bomb stops there).
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import { SnapyardError } from '../../storage/errors.js';
import { unzstdBounded } from '../../storage/zstd-stream.js';
import { memberRank, type MemberRule } from './member-rules.js';

export interface LayerInput {
  /** sha256:... of the bytes as stored (null: not known, not checked). */
  digest: string | null;
  label: string;
  open(): Promise<Readable>;
}

export interface FoundMember {
  /** The member's path in the layer, without a leading / or ./ */
  path: string;
  file: string;
  size: number;
}

const GZIP = [0x1f, 0x8b];
const ZSTD = [0x28, 0xb5, 0x2f, 0xfd];

function startsWith(b: Buffer, magic: number[]): boolean {
  return b.length >= magic.length && magic.every((m, i) => b[i] === m);
}

function layerError(label: string, why: string, cause?: unknown): SnapyardError {
  return new SnapyardError('INVALID_ARGUMENT', `layer ${label}: ${why}`, cause === undefined ? undefined : { cause });
}

/** The raw bytes, hashed and counted; at the end the digest must match. */
async function* verified(src: AsyncIterable<Uint8Array>, layer: LayerInput): AsyncGenerator<Buffer> {
  const h = createHash('sha256');
  for await (const c of src) {
    const b = Buffer.isBuffer(c) ? c : Buffer.from(c);
    h.update(b);
    yield b;
  }
  const got = `sha256:${h.digest('hex')}`;
  if (layer.digest !== null && layer.digest.startsWith('sha256:') && got !== layer.digest) {
    throw layerError(layer.label, `its content has digest ${got}, not ${layer.digest} (corrupt or tampered)`);
  }
}

/** Sniffs the compression from the first bytes and yields the decompressed tar stream, at most `maxBytes` of it. */
async function* decompressed(raw: AsyncIterable<Buffer>, layer: LayerInput, maxBytes: number): AsyncGenerator<Buffer> {
  const it = raw[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  while (head.length < 4) {
    const n = await it.next();
    if (n.done) break;
    head = Buffer.concat([head, n.value]);
  }
  async function* all(): AsyncGenerator<Buffer> {
    if (head.length > 0) yield head;
    for (;;) {
      const n = await it.next();
      if (n.done) return;
      yield n.value;
    }
  }
  let out: AsyncIterable<Buffer>;
  if (startsWith(head, GZIP)) {
    const gunzip = createGunzip();
    let feedError: unknown = null;
    const feed = pipeline(all(), gunzip).catch((e: unknown) => {
      feedError = e;
    });
    out = (async function* () {
      try {
        for await (const c of gunzip) yield c as Buffer;
      } catch (e) {
        await feed;
        if (isSnapyardError(feedError)) throw feedError;
        if (isSnapyardError(e)) throw e;
        const code = (e as NodeJS.ErrnoException).code;
        throw layerError(layer.label, `the gzip stream is truncated or corrupt (${(e as Error).message}${code ? `, ${code}` : ''})`, e);
      }
      await feed;
      if (feedError) throw feedError;
    })();
  } else if (startsWith(head, ZSTD)) {
    out = unzstdBounded(all(), maxBytes, `layer ${layer.label}`);
  } else {
    out = all();
  }
  let total = 0;
  for await (const c of out) {
    total += c.length;
    if (total > maxBytes) throw new SnapyardError('LIMIT_EXCEEDED', `layer ${layer.label} decompresses to more than ${maxBytes} bytes (--max-layer-bytes)`);
    yield c;
  }
}

function isSnapyardError(e: unknown): e is SnapyardError {
  return e instanceof SnapyardError;
}

function normalize(name: string): string {
  return name.replace(/^(\.\/|\/)+/, '');
}

/**
 * Streams the layer and writes the best-ranked member (rules in
 * member-rules.ts) to a file in `tmpDir`; null when no member matches. The
 * whole layer is read either way, so its digest is always checked.
 */
export async function scanLayer(layer: LayerInput, rules: MemberRule[], tmpDir: string, maxBytes: number): Promise<FoundMember | null> {
  const src = await layer.open();
  const tar = extract();
  let best: (FoundMember & { rank: number }) | null = null;
  let serial = 0;
  const written: string[] = [];
  tar.on('entry', (header, stream, next) => {
    const path = normalize(header.name);
    const rank = header.type === 'file' || header.type === 'contiguous-file' ? memberRank(path, rules) : -1;
    if (rank < 0 || (best && rank >= best.rank)) {
      stream.on('end', () => next());
      stream.on('error', next);
      stream.resume();
      return;
    }
    const file = join(tmpDir, `member-${serial++}`);
    written.push(file);
    pipeline(stream, createWriteStream(file, { flags: 'wx' })).then(
      () => {
        best = { path, file, size: header.size ?? 0, rank };
        next();
      },
      (e: unknown) => next(e as Error),
    );
  });
  try {
    await pipeline(decompressed(verified(src, layer), layer, maxBytes), tar);
  } catch (e) {
    await Promise.all(written.map((f) => rm(f, { force: true })));
    if (isSnapyardError(e)) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EACCES' || code === 'EROFS') throw e;
    throw layerError(layer.label, `not a valid tar stream: ${(e as Error).message}`, e);
  }
  const found = best as (FoundMember & { rank: number }) | null;
  await Promise.all(written.filter((f) => f !== found?.file).map((f) => rm(f, { force: true })));
  return found ? { path: found.path, file: found.file, size: found.size } : null;
}

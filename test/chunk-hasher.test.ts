/**
 * The client's index build hashes chunks on a worker thread in batches
 * (client/chunk-hasher.ts): stand-in digests first, the real ones written
 * over them once the build is done.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ChunkHasher } from '../client/chunk-hasher.js';
import { indexFile } from '../client/file-index.js';
import { ChunkIndexBuilder } from '../storage/blobs/chunk-index.js';
import { chunkStream, DEFAULT_FASTCDC } from '../storage/blobs/fastcdc.js';
import type { Digest } from '../storage/digest.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-chunk-hasher-');
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('client index build: chunk hashing on a worker', () => {
  test('every chunk gets its own sha256, in order, across many batches, two lists, and a chunk larger than a batch', async () => {
    const chunks = [
      ...Array.from({ length: 300 }, (_, i) => randomBytes(1 + ((i * 7919) % 70_000))), // ~10 MB: several 4 MiB batches
      randomBytes(5 * 1024 * 1024), // larger than a batch
      Buffer.alloc(0),
      ...Array.from({ length: 40 }, () => randomBytes(33_000)),
    ];
    const hasher = new ChunkHasher();
    const a = new ChunkIndexBuilder();
    const b = new ChunkIndexBuilder();
    for (const [i, c] of chunks.entries()) {
      const scratch = Buffer.from(c); // the builder's buffers are reused: the sink must copy
      const { digest } = await hasher.add(scratch);
      scratch.fill(0xa5);
      (i < 200 ? a : b).push(digest, c.byteLength);
    }
    const lists = [a.buildList(), b.buildList()];
    await hasher.resolve(lists).finally(() => hasher.close());
    const got = lists.flatMap((l) => Array.from({ length: l.count }, (_, i) => l.digestAt(i)));
    expect(got).toEqual(chunks.map((c) => `sha256:${sha(c)}`));
  });

  test('a list entry that is no stand-in of this hasher is refused, not left as it is', async () => {
    const hasher = new ChunkHasher();
    const l = new ChunkIndexBuilder();
    l.push((await hasher.add(randomBytes(100))).digest, 100);
    l.push(`sha256:${sha(Buffer.from('x'))}` as Digest, 1);
    await expect(hasher.resolve([l.buildList()]).finally(() => hasher.close())).rejects.toThrow(/no stand-in digest/);
  });

  test('indexFile of a raw file names the chunks FastCDC cuts, with their sha256, and the file\'s digest', async () => {
    const file = join(tmp(), 'raw.img');
    const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(2 << 20, 7), randomBytes(5 << 20)]);
    writeFileSync(file, data);
    const fi = await indexFile(file, null);
    expect(fi.digest).toBe(`sha256:${sha(data)}`);
    const want: string[] = [];
    for await (const c of chunkStream((async function* () { yield data; })(), DEFAULT_FASTCDC, { copy: true })) want.push(`sha256:${sha(c.data)}`);
    const lists = fi.index.lists();
    expect(lists.flatMap((l) => Array.from({ length: l.count }, (_, i) => l.digestAt(i)))).toEqual(want);
  });
});

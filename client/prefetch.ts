/**
 * `snapyard prefetch`: fills the (node) cache with every chunk of a snapshot,
 * so a later pull or pod start on this node needs no network. Only what the
 * cache lacks is fetched, delta-compressed against what it holds; the
 * snapshot is then recorded as held.
 */
import { chunkSet } from '../storage/blobs/blob-index.js';
import type { ClientCache } from './cache.js';
import { fetchChunks, type Want } from './fetch.js';
import type { Ref } from './ref.js';
import type { Registry } from './registry.js';
import { remoteIndex } from './remote-index.js';
import { LocalSources } from './sources.js';

export interface PrefetchResult {
  ref: string;
  manifestDigest: string;
  blobDigest: string;
  chunks: number;
  chunksFetched: number;
  bytesDownloaded: number;
  seconds: number;
}

export async function prefetch(ref: Ref, opts: { registry: Registry; cache: ClientCache; concurrency?: number }): Promise<PrefetchResult> {
  const t0 = performance.now();
  const { registry: reg, cache } = opts;
  const have = cache.held(null).slice(0, 32);
  const remote = await remoteIndex(reg, ref, have, (d) => cache.readIndex(d));
  cache.writeIndex(remote.index.blobDigest, remote.bytes);
  const sources = await LocalSources.open(cache, []);
  try {
    const want: Want[] = [];
    const all = chunkSet(remote.index);
    for (const [hex, length] of all) if (!(await sources.inCache(hex))) want.push({ hex, length });
    const got = want.length === 0 ? { chunks: 0, wireBytes: 0 } : await fetchChunks(want, {
      registry: reg, repo: ref.repo, blob: remote.index.blobDigest, have, sources, cache,
      ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    });
    cache.addHeld(remote.index.blobDigest, null);
    return {
      ref: `${ref.repo}${ref.tag ? `:${ref.tag}` : `@${ref.digest}`}`,
      manifestDigest: remote.answer.manifest.digest,
      blobDigest: remote.index.blobDigest,
      chunks: all.size,
      chunksFetched: got.chunks,
      bytesDownloaded: got.wireBytes + remote.packedBytes,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await sources.close();
  }
}

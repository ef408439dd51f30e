/**
 * `snapyard push` and `snapyard pull`: the client commands. The registry is
 * --registry URL, else $SNAPYARD_REGISTRY, else http://127.0.0.1:5000.
 */
import { ClientCache, defaultCacheDir } from '../client/cache.js';
import { pull, type PullSummary } from '../client/pull.js';
import { push } from '../client/push.js';
import { prefetch } from '../client/prefetch.js';
import { parseRef } from '../client/ref.js';
import type { Registry } from '../client/registry.js';
import { Progress } from './progress.js';
import { parseSize } from './serve-options.js';
import { openRegistry, type RegistryFlags } from './registry-options.js';

interface ClientSession {
  reg: Registry;
  cache: ClientCache;
  progress: Progress;
}

/** Runs fn with a registry client, the cache and a progress bar (off for --json), all closed afterwards. */
async function withClient<T>(o: RegistryFlags & { cache?: string; json?: boolean }, fn: (c: ClientSession) => Promise<T>, maxBytes?: number): Promise<T> {
  const cache = new ClientCache(o.cache ?? defaultCacheDir(), maxBytes !== undefined ? { maxBytes } : {});
  const c = { reg: openRegistry(o), cache, progress: new Progress(!o.json && process.stderr.isTTY === true) };
  try {
    return await fn(c);
  } finally {
    c.progress.stop();
    await c.cache.close();
    await c.reg.close();
  }
}

export async function pushCommand(refStr: string, file: string, o: RegistryFlags & { json?: boolean; cache?: string; level?: number; seed?: string[] }): Promise<void> {
  const ref = parseRef(refStr);
  const r = await withClient(o, ({ reg, cache, progress }) =>
    push(ref, file, { registry: reg, cache, ...(o.level !== undefined ? { level: o.level } : {}), ...(o.seed ? { seeds: o.seed } : {}), onPhase: (phase) => progress.update({ phase }) }),
  );
  if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else {
    process.stdout.write(`pushed ${r.ref} ${r.manifestDigest}\n`);
    process.stdout.write(`  blob ${r.blobDigest} (${r.size} bytes, ${r.layout}), ${r.chunks} chunks, ${r.newChunks} new (${r.newRawBytes} bytes raw, ${r.uploadBytes} bytes sent), ${r.seconds.toFixed(2)} s\n`);
    if (r.base) process.stdout.write(`  base ${r.base.backingFile}: blob ${r.base.blob}${r.base.manifest ? `, manifest ${r.base.manifest} (subject)` : ' (not in the registry)'}\n`);
  }
}

/** The cache's size bound: --cache-max, else $SNAPYARD_CACHE_MAX, else none. */
export function cacheMaxBytes(o: { cacheMax?: string }): number | undefined {
  const v = o.cacheMax ?? process.env.SNAPYARD_CACHE_MAX;
  return v === undefined || v === '' ? undefined : parseSize(v);
}

export interface PullFlags extends RegistryFlags {
  cacheMax?: string;
  output: string;
  base?: string;
  overlay?: boolean;
  cache?: string;
  dryRun?: boolean;
  json?: boolean;
  registry?: string;
  concurrency?: number;
}

export async function pullCommand(refStr: string, o: PullFlags): Promise<void> {
  const ref = parseRef(refStr);
  const s = await withClient(o, ({ reg, cache, progress }) =>
    pull(ref, {
      registry: reg, cache, output: o.output,
      ...(o.base !== undefined ? { base: o.base } : {}),
      overlay: o.overlay === true,
      dryRun: o.dryRun === true,
      ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}),
      onProgress: (e) => progress.update(e),
    }),
    cacheMaxBytes(o),
  );
  if (o.json) process.stdout.write(`${JSON.stringify(s)}\n`);
  else process.stdout.write(describe(s));
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(2)} MB`;
}

function describe(s: PullSummary): string {
  if (s.dryRun) {
    return `${s.ref}: would download ${s.bytesToDownload} bytes (${mb(s.bytesToDownload ?? 0)}; ${s.chunks.downloaded} of ${s.chunks.total} chunks), reuse ${mb(s.bytesFromBase)} from the base and ${mb(s.bytesFromCache)} from the cache\n`;
  }
  return `pulled ${s.ref} (${s.manifestDigest}) to ${s.output} as ${s.mode === 'overlay' ? 'an overlay' : 'a full image'}\n` +
    `  downloaded ${mb(s.bytesDownloaded)} (${s.chunks.downloaded} chunks), reused ${mb(s.bytesFromBase)} from the base (${s.chunks.fromBase}), ${mb(s.bytesInPlace)} in place (${s.chunks.inPlace}) and ${mb(s.bytesFromCache)} from the cache (${s.chunks.fromCache}), ${s.seconds.toFixed(2)} s\n`;
}

/** `snapyard prefetch REF...`: warms the cache (a node cache DaemonSet), one line (or JSON object) per snapshot. */
export async function prefetchCommand(refs: string[], o: RegistryFlags & { cache?: string; cacheMax?: string; json?: boolean; concurrency?: number }): Promise<void> {
  const parsed = refs.map(parseRef);
  await withClient(o, async ({ reg, cache }) => {
    for (const ref of parsed) {
      const r = await prefetch(ref, { registry: reg, cache, ...(o.concurrency !== undefined ? { concurrency: o.concurrency } : {}) });
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else process.stdout.write(`prefetched ${r.ref} (${r.manifestDigest}): ${r.chunksFetched} of ${r.chunks} chunks fetched, ${mb(r.bytesDownloaded)} downloaded, ${r.seconds.toFixed(2)} s\n`);
    }
  }, cacheMaxBytes(o));
}

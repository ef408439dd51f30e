/**
 * A lazy mount of a snapshot: its index from the registry (`_delta`, as a
 * pull asks for it), the local places chunks may already be (the base file
 * given, the node cache), a fetcher for the rest, the block source QEMU
 * reads through NBD, and the background prefetch. cli/mount.ts serves it.
 */
import type { Digest } from '../../storage/digest.js';
import type { ClientCache } from '../cache.js';
import type { Want } from '../fetch.js';
import { indexFile, type FileIndex } from '../file-index.js';
import { decodeBlobIndex } from '../../storage/blobs/blob-index.js';
import type { Ref } from '../ref.js';
import type { Registry } from '../registry.js';
import { remoteIndex } from '../remote-index.js';
import { LocalSources } from '../sources.js';
import { ChunkFetcher } from './chunk-fetcher.js';
import { LazySource, snapshotChunks } from './lazy-source.js';
import { LocalCopy } from './local-copy.js';
import { join } from 'node:path';
import { Prefetcher } from './prefetcher.js';
import type { PullSummary } from '../pull.js';
import { SnapyardError } from '../../storage/errors.js';
import { fetchTrace, pushTrace, TraceRecorder, type TraceRef } from './boot-trace.js';

export interface MountOptions {
  registry: Registry;
  cache: ClientCache;
  /** A local image sharing chunks with the snapshot (an earlier version): read instead of fetched. */
  base?: string;
  /**
   * The base's blob digest when already known (pod-init's sidecar): its index
   * is then taken from the cache, and without one there the base is not used
   * (the file is not hashed before the export listens).
   */
  baseDigest?: Digest;
  readTimeoutMs?: number;
  /** Keep up to this many bytes of what was answered as plain bytes in a local file (client/lazy/local-copy.ts; 0 or absent: none). */
  localCopyBytes?: number;
  /** Background prefetch rate in bytes/s (0 or absent: none). */
  prefetchRate?: number;
  onPrefetched?: (s: { chunks: number; bytes: number; seconds: number }) => void;
  /** Record the ranges read in the first this many seconds and push them as the snapshot's boot trace. */
  recordTraceSeconds?: number;
  /** A boot trace was pushed, or the one found was fetched first. */
  onTrace?: (e: { event: 'trace-pushed' | 'trace-fetched'; manifest: string; ranges: number }) => void;
  onError?: (e: unknown) => void;
  /** Once every chunk is local, write the snapshot here (over the base, with one, as a pull --overlay does): no network, no NBD server needed for it. */
  materialize?: string;
  onMaterialized?: (s: PullSummary) => void;
}

export interface Mount {
  ref: string;
  manifestDigest: string;
  blobDigest: Digest;
  source: LazySource;
  fetcher: ChunkFetcher;
  /** What was answered, kept as plain bytes (null with localCopyBytes 0). */
  copy: LocalCopy | null;
  /** Chunks of the snapshot (guest view and the file's own). */
  chunks: number;
  /** Call once the export answers: looks at what is local, fetches the boot trace, starts the prefetch. */
  start(): Promise<Started>;
  close(): Promise<void>;
}

export interface Started {
  /** Chunks local when it started. */
  chunksLocal: number;
  /** The boot trace found in the registry (its chunks are fetched first), if any. */
  trace: TraceRef | null;
  /** A background fetch runs (the rest at --prefetch-rate, or the trace's chunks). */
  prefetching: boolean;
}

export async function openMount(ref: Ref, opts: MountOptions): Promise<Mount> {
  const { registry: reg, cache } = opts;
  const base = opts.base ? await openBase(opts.base, opts.baseDigest, cache) : null;
  const have = [...(base ? [base.digest] : []), ...cache.held(base?.digest ?? null)].filter((d, i, a) => a.indexOf(d) === i).slice(0, 32);
  const remote = await remoteIndex(reg, ref, have, (d) => (d === base?.digest ? base.encoded : cache.readIndex(d)));
  cache.writeIndex(remote.index.blobDigest, remote.bytes);
  const sources = await LocalSources.open(cache, base ? { path: opts.base!, index: base.index } : null);
  try {
    const fetcher = new ChunkFetcher({ registry: reg, repo: ref.repo, blob: remote.index.blobDigest, have, sources, cache, ...(opts.onError ? { onRetry: opts.onError, onFlushError: opts.onError } : {}) });
    const recorder = opts.recordTraceSeconds ? new TraceRecorder() : null;
    // In the cache's folder: on the disk that holds what the mount fetches.
    const copy = opts.localCopyBytes ? new LocalCopy(join(cache.dir, 'mounts'), opts.localCopyBytes) : null;
    const source = new LazySource({
      index: remote.index, sources, fetcher, cache: cache.chunks, copy,
      ...(opts.readTimeoutMs !== undefined ? { readTimeoutMs: opts.readTimeoutMs } : {}),
      ...(recorder ? { onRead: (o: number, l: number) => recorder.add(o, l) } : {}),
    });
    const guest = { digest: remote.index.blobDigest, size: source.size };
    // The guest view's chunks in guest order, then the rest of the file's (qcow2 metadata): once all
    // are local the snapshot is held (a pull of it is local too, and the cache's eviction keeps it).
    const all = snapshotChunks(remote.index);
    const rate = opts.prefetchRate ?? 0;
    if (opts.materialize && !(rate > 0)) throw new SnapyardError('INVALID_ARGUMENT', '--materialize needs the background prefetch (--prefetch-rate above 0) to bring every chunk');
    let materializing: Promise<void> | null = null;
    const held = () => {
      cache.addHeld(remote.index.blobDigest, base ? base.digest : null);
      if (!opts.materialize) return;
      // Every chunk is local: the pull reads only the cache and the base.
      // pull.js is loaded only here: the first read does not wait for it.
      materializing = import('../pull.js').then(({ pull }) => pull(ref, { registry: reg, cache, output: opts.materialize!, remote, ...(base ? { base: opts.base!, overlay: true } : {}) })).then(
        (s) => opts.onMaterialized?.(s),
        (e: unknown) => opts.onError?.(e),
      );
    };
    let prefetch: Prefetcher | null = null;
    let stopped = false;
    // After the export answers: what is local already, the boot trace, the background fetch.
    const start = async (): Promise<Started> => {
      const trace = await fetchTrace(reg, ref.repo, remote.answer.manifest.digest, guest).catch((e: unknown) => {
        opts.onError?.(e);
        return null;
      });
      const lacking = await notLocal(fetcher, all);
      if (lacking.length === 0) held();
      // The boot trace's chunks first, at full speed; then the rest at the prefetch rate (if any).
      const traced = trace ? await notLocal(fetcher, source.wantsFor(trace.ranges)) : [];
      const firsts = new Set(traced.map((w) => w.hex));
      const wants = [...traced, ...(rate > 0 ? lacking.filter((w) => !firsts.has(w.hex)) : [])];
      if (wants.length > 0 && !stopped) {
        prefetch = new Prefetcher({
          fetcher, wants, rate: rate > 0 ? rate : Infinity, unthrottled: traced.length,
          onUnthrottledDone: () => trace && opts.onTrace?.({ event: 'trace-fetched', manifest: trace.ref.manifest, ranges: trace.ref.ranges }),
          onDone: (s) => {
            if (!(rate > 0)) return;
            held();
            opts.onPrefetched?.(s);
          },
          ...(opts.onError ? { onError: opts.onError } : {}),
        });
      }
      return { chunksLocal: all.length - lacking.length, trace: trace?.ref ?? null, prefetching: prefetch !== null };
    };
    // The trace: the reads of the first recordTraceSeconds after the first read (or until the mount stops).
    let traceTimer: NodeJS.Timeout | null = null;
    let tracePush: Promise<void> | null = null;
    const finishTrace = () => {
      if (traceTimer) clearTimeout(traceTimer);
      if (!recorder || tracePush) return tracePush;
      const ranges = recorder.stop();
      tracePush = ranges.length === 0 ? Promise.resolve() : pushTrace(reg, ref.repo, remote.answer.manifest, guest, ranges).then(
        (t) => opts.onTrace?.({ event: 'trace-pushed', manifest: t.manifest, ranges: t.ranges }),
        (e: unknown) => opts.onError?.(e),
      );
      return tracePush;
    };
    if (recorder) recorder.onFirst = () => (traceTimer = setTimeout(finishTrace, opts.recordTraceSeconds! * 1000));
    return {
      ref: `${ref.repo}${ref.tag ? `:${ref.tag}` : `@${ref.digest}`}`,
      manifestDigest: remote.answer.manifest.digest,
      blobDigest: remote.index.blobDigest,
      source, fetcher, copy,
      chunks: all.length,
      start,
      close: async () => {
        stopped = true;
        await finishTrace();
        await materializing;
        const p = prefetch as Prefetcher | null;
        p?.stop();
        fetcher.close();
        await p?.done;
        await fetcher.flushed();
        copy?.close();
        await sources.close();
      },
    };
  } catch (e) {
    await sources.close();
    throw e;
  }
}

/** The base's index: from the cache when its digest is known (null when the cache lacks it), else the file indexed. */
async function openBase(path: string, digest: Digest | undefined, cache: ClientCache): Promise<FileIndex | null> {
  if (digest === undefined) return indexFile(path, cache);
  const bytes = cache.readIndex(digest);
  return bytes ? { digest, index: decodeBlobIndex(bytes), encoded: bytes, cached: true } : null;
}

/** Chunks per slice of notLocal(): about a millisecond of lookups. */
const LOOKUPS_PER_SLICE = 512;

/**
 * The wants that are neither in the node cache nor in a local file. Looked up
 * in slices with the event loop's turn between them: guest reads arriving
 * meanwhile are answered, not held behind a look over every chunk of the
 * snapshot (16,000 chunks for a 1 GB image, about 70 ms here; a lookup's
 * await alone never yields to I/O).
 */
async function notLocal(fetcher: ChunkFetcher, wants: Want[]): Promise<Want[]> {
  const out: Want[] = [];
  for (let i = 0; i < wants.length; i++) {
    if (i > 0 && i % LOOKUPS_PER_SLICE === 0) await new Promise<void>((r) => setImmediate(r));
    if (!(await fetcher.isLocal(wants[i]!.hex))) out.push(wants[i]!);
  }
  return out;
}

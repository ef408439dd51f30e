/**
 * `snapyard pull REF -o FILE [--base FILE] [--overlay] [--cache DIR] [--dry-run]`.
 *
 * 1. Know what we hold: the base file's index (computed once, then cached)
 *    and the snapshots the cache holds.
 * 2. Ask the server (`_delta`) for the target: its index, sent as a
 *    difference from the held index it shares most with.
 * 3. Plan every chunk the output needs: from the base file, the image already
 *    at the output path (in-place data, full pulls), the cache, or the network
 *    (overlay: only chunks where the target differs from the base).
 * 4. Fetch the network part in bulk (client/fetch.ts): verified, cached,
 *    flushed as it goes, so a killed pull resumes without downloading again.
 * 5. Write the full image (byte-exact, digest checked) or the overlay. A full
 *    image is written while its chunks download (client/streamed-image.ts):
 *    each downloaded chunk decoded and verified once, on the cache's workers,
 *    and written into the image from there; the whole file hashed on a worker.
 */
import { chunksEstimate } from '../storage/protocol/api.js';
import { existsSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import type { BlobIndex } from '../storage/blobs/blob-index.js';
import { SnapyardError } from '../storage/errors.js';
import { Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { writeFull, writeOverlay, dirtyClusters, readFileRange } from './assemble.js';
import { StreamedImage } from './streamed-image.js';
import type { ClientCache } from './cache.js';
import { fetchChunks, type Want } from './fetch.js';
import { indexFile } from './file-index.js';
import type { Ref } from './ref.js';
import type { Registry } from './registry.js';
import { carrySnapshots } from './overlay-snapshots.js';
import { LocalSources } from './sources.js';
import { remoteIndex, type RemoteIndex } from './remote-index.js';

export interface PullOptions {
  registry: Registry;
  cache: ClientCache;
  output: string;
  base?: string;
  overlay?: boolean;
  dryRun?: boolean;
  concurrency?: number;
  onProgress?: (e: { phase: string; done?: number; total?: number }) => void;
  /** The target's index when the caller fetched it already (pod-init plans with it): not asked for again. */
  remote?: RemoteIndex;
  /** The overlay names its backing file by absolute path (pod-init), not relative to its own directory. */
  absoluteBacking?: boolean;
}

export interface PullSummary {
  ref: string;
  manifestDigest: string;
  blobDigest: string;
  output: string | null;
  mode: 'full' | 'overlay';
  dryRun: boolean;
  /** Chunk bytes that came over the network (as sent: compressed). */
  bytesDownloaded: number;
  /** For --dry-run: what the pull would download. */
  bytesToDownload?: number;
  bytesFromBase: number;
  /** Reused from the file already at the output path. */
  bytesInPlace: number;
  bytesFromCache: number;
  chunks: { total: number; fromBase: number; inPlace: number; fromCache: number; downloaded: number };
  indexBytes: number;
  seconds: number;
  /** Overlay pulls: the target's internal snapshots (savevm) carried into the overlay. */
  snapshots?: string[];
}

/** The qcow2 header fields up to nb_snapshots (offset 60). */
const QCOW2_HEADER_BYTES = 72;

export async function pull(ref: Ref, opts: PullOptions): Promise<PullSummary> {
  const t0 = performance.now();
  const { registry: reg, cache } = opts;
  if (opts.overlay && !opts.base) throw new SnapyardError('INVALID_ARGUMENT', '--overlay needs --base FILE (the backing file)');
  opts.onProgress?.({ phase: 'indexing base' });
  const base = opts.base ? await indexFile(opts.base, cache) : null;
  if (base && !base.cached) cache.writeIndex(base.digest, base.encoded);
  // In-place data: an image already at the output path (an earlier version, say) is a seed too.
  const inPlace = !opts.overlay && existsSync(opts.output) && statSync(opts.output).isFile() && (!opts.base || resolve(opts.output) !== resolve(opts.base))
    ? await indexFile(opts.output, cache).catch(() => null)
    : null;
  const have = [...(base ? [base.digest] : []), ...(inPlace ? [inPlace.digest] : []), ...cache.held(base?.digest ?? null)].filter((d, i, a) => a.indexOf(d) === i).slice(0, 32);
  opts.onProgress?.({ phase: 'negotiating' });
  const remote = opts.remote ?? (await remoteIndex(reg, ref, have, (d) => (d === base?.digest ? base.encoded : d === inPlace?.digest ? inPlace.encoded : cache.readIndex(d))));
  const ans = remote.answer;
  const target = remote.index;
  cache.writeIndex(target.blobDigest, remote.bytes);

  // Plan: the chunks the output needs, and where each comes from.
  if (opts.overlay) {
    if (!(target instanceof Qcow2Index)) throw new SnapyardError('INVALID_ARGUMENT', 'the target is not a qcow2 image the registry understands: pull it without --overlay');
    if (!(base!.index instanceof Qcow2Index) || base!.index.layout.hasBacking) throw new SnapyardError('INVALID_ARGUMENT', '--base must be a standalone qcow2 image (no backing file of its own)');
  }
  opts.onProgress?.({ phase: 'planning' });
  const dirty = opts.overlay ? dirtyClusters(target as Qcow2Index, base!.index as Qcow2Index, (target as Qcow2Index).layout.clusterSize) : null;
  // Overlay: the chunks of the dirty clusters, and the file's header (does it hold internal snapshots?).
  const needed = dirty ? mergeWants(overlayNeeds(target as Qcow2Index, dirty), fileChunks(target, QCOW2_HEADER_BYTES)) : fileChunks(target);
  const sources = await LocalSources.open(cache, [base ? { path: opts.base!, index: base.index } : null, inPlace ? { path: opts.output, index: inPlace.index } : null]);
  try {
    const counts = { total: needed.length, fromBase: 0, inPlace: 0, fromCache: 0, downloaded: 0 };
    let bytesFromBase = 0;
    let bytesInPlace = 0;
    let bytesFromCache = 0;
    const network: Want[] = [];
    const baseSlot = base ? 0 : -1;
    for (const w of needed) {
      const f = sources.fileOf(w.hex);
      if (f >= 0 && f === baseSlot) {
        counts.fromBase++;
        bytesFromBase += w.length;
      } else if (f >= 0) {
        counts.inPlace++;
        bytesInPlace += w.length;
      } else if (await sources.inCache(w.hex)) {
        counts.fromCache++;
        bytesFromCache += w.length;
      } else network.push(w);
    }
    const summary: PullSummary = {
      ref: `${ref.repo}${ref.tag ? `:${ref.tag}` : `@${ref.digest}`}`,
      manifestDigest: ans.manifest.digest,
      blobDigest: ans.blob.digest,
      output: opts.dryRun ? null : opts.output,
      mode: opts.overlay ? 'overlay' : 'full',
      dryRun: opts.dryRun === true,
      bytesDownloaded: 0,
      bytesFromBase,
      bytesInPlace,
      bytesFromCache,
      chunks: counts,
      indexBytes: remote.packedBytes,
      seconds: 0,
    };
    if (opts.dryRun) {
      const est = network.length === 0 ? { wireBytes: 0 } : await reg.call('POST', `/snapyard/v1/${ref.repo}/_chunks`, chunksEstimate, { blob: target.blobDigest, chunks: network.map((w) => w.hex), have, estimate: true });
      summary.bytesToDownload = est.wireBytes + remote.packedBytes;
      summary.chunks.downloaded = network.length;
      summary.seconds = (performance.now() - t0) / 1000;
      return summary;
    }
    const totalNet = network.reduce((n, w) => n + w.length, 0);
    opts.onProgress?.({ phase: 'downloading', done: 0, total: totalNet });
    let got = 0;
    const get = async (hex: string) => {
      const b = await sources.get(hex);
      if (!b) throw new SnapyardError('CHUNK_MISSING', `chunk sha256:${hex} is neither local nor downloaded`);
      return b;
    };
    // A full image with chunks to download is written as they arrive.
    const streamed = !opts.overlay && network.length > 0;
    const image = streamed ? await StreamedImage.create(opts.output, target, network.map((w) => w.hex)) : null;
    const writing = image ? image.run(get, cache.chunks.digester()) : null;
    const fetching = fetchChunks(network, {
      registry: reg, repo: ref.repo, blob: target.blobDigest, have, sources, cache,
      ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
      ...(image ? { placer: image } : {}),
      onChunk: (raw) => opts.onProgress?.({ phase: 'downloading', done: (got += raw), total: totalNet }),
    });
    // Both settle before this returns (a failed download still lets the writer remove its part file).
    const [fetchedR, writingR] = await Promise.allSettled([fetching, writing]);
    if (fetchedR.status === 'rejected') throw fetchedR.reason;
    if (writingR.status === 'rejected') throw writingR.reason;
    const fetched = fetchedR.value;
    counts.downloaded = fetched.chunks;
    summary.bytesDownloaded = fetched.wireBytes + remote.packedBytes;
    if (streamed) {
      // Written already.
    } else if (opts.overlay) {
      const backingName = opts.absoluteBacking ? resolve(opts.base!) : backingNameFor(opts.output, opts.base!);
      const cs = (target as Qcow2Index).layout.clusterSize;
      let done = 0;
      // Internal snapshots (savevm) live in the file, not in the guest view: the whole file is
      // rebuilt beside the output (local data plus the rest of the download), its snapshots
      // carried into the overlay relative to the base, and the rebuilt file removed.
      const header = await readFileRange(target, 0, QCOW2_HEADER_BYTES, get);
      const full = header.length >= 64 && header.readUInt32BE(60) > 0 ? `${opts.output}.snapyard-full` : null;
      try {
        if (full) {
          const rest: Want[] = [];
          for (const w of fileChunks(target)) if (sources.fileOf(w.hex) < 0 && !(await sources.inCache(w.hex))) rest.push(w);
          opts.onProgress?.({ phase: 'downloading snapshots' });
          const more = await fetchChunks(rest, { registry: reg, repo: ref.repo, blob: target.blobDigest, have, sources, cache, ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}) });
          counts.downloaded += more.chunks;
          summary.bytesDownloaded += more.wireBytes;
          await writeFull(full, target, get);
        }
        await writeOverlay(opts.output, target as Qcow2Index, { path: opts.base!, index: base!.index as Qcow2Index, backingName }, get, () => opts.onProgress?.({ phase: 'writing', done: (done += cs), total: dirty!.length * cs }), dirty!,
          full ? async (w) => (summary.snapshots = (await carrySnapshots(full, w, opts.base!)).carried.map((c) => c.name)) : undefined);
      } finally {
        if (full) await rm(full, { force: true });
      }
    } else {
      let done = 0;
      // Everything in the cache (nothing taken from a base file): the cache's batched read path.
      const allCached = counts.fromBase === 0 && counts.inPlace === 0;
      await writeFull(opts.output, target, get, (n) => opts.onProgress?.({ phase: 'writing', done: (done += n), total: target.size }), allCached ? cache.chunks : undefined);
    }
    opts.onProgress?.({ phase: 'done' });
    // Held: every chunk of the target is in the cache, or in the cache plus this base file.
    if (counts.inPlace === 0) cache.addHeld(target.blobDigest, opts.overlay || counts.fromBase > 0 ? base!.digest : null);
    summary.seconds = (performance.now() - t0) / 1000;
    return summary;
  } finally {
    await sources.close();
  }
}

/**
 * The distinct chunks the exact file is made of (the recipe's pieces: for a
 * qcow2 image with compressed clusters, the guest data decompressed from them
 * is in the index but not in the file).
 */
function fileChunks(index: BlobIndex, to = index.size): Want[] {
  const seen = new Set<string>();
  const out: Want[] = [];
  let last: unknown = null;
  let lastI = -1;
  for (const p of index.blobPieces(0, Math.min(to, index.size))) {
    if (p.list === last && p.i === lastI) continue;
    last = p.list;
    lastI = p.i;
    const hex = p.list.rawDigestAt(p.i).toString('hex');
    if (seen.has(hex)) continue;
    seen.add(hex);
    out.push({ hex, length: p.list.lengths[p.i]! });
  }
  return out;
}

function mergeWants(a: Want[], b: Want[]): Want[] {
  const seen = new Set(a.map((w) => w.hex));
  return [...a, ...b.filter((w) => !seen.has(w.hex))];
}

/** Chunks of the target's data stream that overlap a cluster where it may differ from the base. */
function overlayNeeds(target: Qcow2Index, dirty: Uint32Array): Want[] {
  const cs = target.layout.clusterSize;
  const seen = new Set<string>();
  const out: Want[] = [];
  for (const c of dirty) {
    for (const p of target.guestPieces(c * cs, Math.min(cs, target.layout.virtualSize - c * cs))) {
      if (p.stream < 0) continue;
      for (const piece of target.data.pieces(p.stream, p.stream + p.length)) {
        const hex = piece.list.rawDigestAt(piece.i).toString('hex');
        if (seen.has(hex)) continue;
        seen.add(hex);
        out.push({ hex, length: piece.list.lengths[piece.i]! });
      }
    }
  }
  return out;
}

/** The overlay names its backing file relative to its own directory when both share a tree, else absolutely. */
function backingNameFor(output: string, base: string): string {
  const absBase = resolve(base);
  const rel = relative(dirname(resolve(output)), absBase);
  return isAbsolute(rel) || rel.startsWith('..') ? absBase : rel;
}

/**
 * `snapyard mount REF --socket PATH [--base FILE] [--cache DIR] [--overlay FILE]`:
 * serves a snapshot's guest view as a read-only NBD export on a unix socket
 * (the default export and `repo:tag`), fetching chunks as they are read
 * (client/lazy/), until SIGTERM/SIGINT. Prints one line once it listens
 * (one JSON object with --json), one when the background prefetch has
 * everything, and one when it stops. docs/nbd.md.
 */
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { ClientCache, defaultCacheDir } from '../client/cache.js';
import { openMount, type Mount } from '../client/lazy/mount.js';
import { ensureNbdOverlay, type OverlayAction } from '../client/lazy/overlay.js';
import { NbdServer } from '../client/nbd/server.js';
import type { BlockSource } from '../client/nbd/source.js';
import { parseRef } from '../client/ref.js';
import type { Digest } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { addRegistryOptions, openRegistry, type RegistryFlags } from './registry-options.js';
import { parseSize } from './size.js';

export interface MountFlags extends RegistryFlags {
  socket: string;
  base?: string;
  /** Not a flag: the base's blob digest when known (pod-init --lazy, from the snapshot's sidecar). */
  baseDigest?: Digest;
  cache?: string;
  cacheMax?: string;
  overlay?: string;
  readTimeout: string;
  prefetchRate: string;
  localCopy: string;
  recordTrace?: string;
  materialize?: string;
  json?: boolean;
}

function seconds(v: string, flag = '--read-timeout'): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new SnapyardError('INVALID_ARGUMENT', `${flag} ${JSON.stringify(v)} is not a positive number of seconds`);
  return n;
}

export async function mountCommand(refStr: string, o: MountFlags): Promise<void> {
  const ref = parseRef(refStr);
  const readTimeoutMs = seconds(o.readTimeout) * 1000;
  const rate = parseSize(o.prefetchRate);
  const say = (event: string, fields: Record<string, unknown>, text: string, then?: () => void) =>
    process.stdout.write(o.json ? `${JSON.stringify({ event, ...fields })}\n` : `${text}\n`, then);
  const warn = (e: unknown) => process.stderr.write(`snapyard mount: ${e instanceof Error ? e.message : String(e)}\n`);
  // remote.js (pull, push) is loaded only for a size bound: the first read does not wait for it.
  const max = (o.cacheMax ?? process.env.SNAPYARD_CACHE_MAX) ? (await import('./remote.js')).cacheMaxBytes(o) : undefined;
  const cache = new ClientCache(o.cache ?? defaultCacheDir(), max !== undefined ? { maxBytes: max } : {});
  const reg = openRegistry(o);
  let mount: Mount | null = null;
  let server: NbdServer | null = null;
  const shutdown = async () => {
    await server?.close();
    await mount?.close();
    await cache.close();
    await reg.close();
  };
  try {
    mount = await openMount(ref, {
      registry: reg, cache, readTimeoutMs, prefetchRate: rate, localCopyBytes: parseSize(o.localCopy),
      ...(o.base !== undefined ? { base: o.base } : {}),
      ...(o.baseDigest !== undefined ? { baseDigest: o.baseDigest } : {}),
      onError: warn,
      ...(o.materialize !== undefined ? { materialize: o.materialize } : {}),
      onMaterialized: (m) => say('materialized', { file: resolve(m.output!), form: m.mode, bytesDownloaded: m.bytesDownloaded },
        `materialized ${m.ref} to ${m.output} (${m.mode === 'overlay' ? 'an overlay over the base' : 'a full image'})${o.overlay ? `; once QEMU has stopped: qemu-img rebase -u -b ${resolve(m.output!)} -F qcow2 ${o.overlay}` : ''}`),
      ...(o.recordTrace !== undefined ? { recordTraceSeconds: seconds(o.recordTrace, '--record-trace') } : {}),
      onTrace: (t) => say(t.event, { manifest: t.manifest, ranges: t.ranges }, t.event === 'trace-pushed'
        ? `boot trace pushed: ${t.ranges} ranges, ${t.manifest} (subject ${mount!.manifestDigest})`
        : `boot trace ${t.manifest}: its ${t.ranges} ranges are local`),
      onPrefetched: (s) => say('prefetched', s, `prefetched ${refStr}: every chunk is local (${s.bytes} bytes fetched in the background, ${s.seconds.toFixed(2)} s)`),
    });
    const exports = new Map<string, BlockSource>([['', mount.source], [mount.ref, mount.source]]);
    server = new NbdServer({ exports, onError: warn });
    await server.listen(o.socket);
    const socket = resolve(o.socket);
    const urls = [...exports.keys()].map((n) => `nbd+unix:///${n}?socket=${socket}`);
    let overlayAction: OverlayAction | null = null;
    if (o.overlay) overlayAction = await ensureNbdOverlay(o.overlay, urls[0]!, mount.source.size, mount.blobDigest);
    say('listening', {
      ref: mount.ref, manifest: mount.manifestDigest, blob: mount.blobDigest, size: mount.source.size, socket, exports: urls, chunks: mount.chunks,
      ...(o.overlay ? { overlay: resolve(o.overlay), overlayAction } : {}),
    }, `mounted ${mount.ref} (${mount.manifestDigest}, ${mount.source.size} bytes) read-only on ${urls.join(' ')}${o.overlay ? `; overlay ${o.overlay} ${overlayAction}` : ''}`);
    // Served from here on; what is local, the boot trace and the prefetch come after (the first read need not wait for them).
    const m = mount;
    void m.start().then((r) => say('ready', { chunks: m.chunks, chunksLocal: r.chunksLocal, trace: r.trace, prefetchRate: r.prefetching ? rate : 0 },
      `${r.chunksLocal} of ${m.chunks} chunks local${r.trace ? `; boot trace ${r.trace.manifest} (${r.trace.ranges} ranges) fetched first` : ''}${r.prefetching && rate > 0 ? `; the rest at ${rate} bytes/s` : ''}`), warn);
  } catch (e) {
    await shutdown().catch(() => {});
    throw e;
  }
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    const s = mount!.fetcher.stats;
    const source = mount!.source;
    const copy = mount!.copy;
    const copyBytes = copy?.bytes ?? 0; // before close() frees it
    void shutdown().catch(warn).finally(() => {
      // Exit once the line is out (a pipe's writes are asynchronous).
      say('stopped', { ...s, cacheCorrupt: source.corrupt, copyReads: copy?.reads ?? 0, copyBytes }, `stopped: ${s.chunks} chunks (${s.wireBytes} bytes) fetched, ${s.retries} retries; ${copy?.reads ?? 0} reads answered from the local copy`, () => process.exit(0));
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export function registerMount(program: Command): void {
  addRegistryOptions(program.command('mount'))
    .description("serve a snapshot's guest view read-only over NBD on a unix socket, fetching chunks as they are read (nbd+unix:///?socket=PATH)")
    .argument('<ref>', 'repo:tag or repo@sha256:...')
    .requiredOption('--socket <path>', 'the unix socket to listen on (a stale one is replaced)')
    .option('--base <file>', 'a local image sharing chunks with the snapshot (an earlier version): its chunks are read, not fetched')
    .option('--cache <dir>', 'node cache: fetched chunks are kept here (env SNAPYARD_CACHE, default ~/.cache/snapyard)')
    .option('--cache-max <size>', 'evict least recently used snapshots from the cache at exit once it stores more than this (env SNAPYARD_CACHE_MAX)')
    .option('--overlay <file>', 'create (or reuse) a qcow2 overlay backed by the export, for QEMU to write to')
    .option('--read-timeout <seconds>', 'a read the network cannot answer by then fails with EIO', '60')
    .option('--prefetch-rate <rate>', 'fetch the rest in the background at this many bytes/s (like 50M; 0: off)', '50M')
    .option('--local-copy <size>', 'keep up to SIZE of what was read as plain bytes in a file on the cache\'s disk (removed when the mount stops): ranges read again are read from it, not decompressed from the cache (0: off)', '1G')
    .option('--record-trace <seconds>', 'record the ranges read in the first SECONDS from the first read (or until stopped) and push them as the boot trace (an OCI artifact whose subject is the snapshot): the next mount fetches them first')
    .option('--materialize <file>', 'once every chunk is local, write the snapshot to FILE (an overlay over --base with one); rebase the QEMU overlay onto it (qemu-img rebase -u) to run without the mount')
    .option('--json', 'JSON lines: listening, ready, trace-fetched, trace-pushed, prefetched, materialized, stopped')
    .action(async (ref: string, o: MountFlags) => mountCommand(ref, o));
}

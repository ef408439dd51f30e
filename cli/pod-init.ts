/**
 * `snapyard pod-init`: the drop-in init step for the existing emulator pods
 * (docs/pod-init.md). Reads their environment (USE_PREBUILT_SNAPSHOT,
 * SNAPSHOT_REGISTRY, SNAPSHOT_TAG, SNAPSHOT_DIR, DISK, SNAPSHOT_MODE,
 * SNAPSHOT_RESET, SNAPSHOT_BRANCH, SNAPSHOT_PARENT_DISK, POD_NAME); flags
 * override it. Exit codes: 0 done (or nothing to do), 2 a usage, registry or
 * data error, 3 a persistent overlay whose parent changed (refused).
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { ClientCache } from '../client/cache.js';
import { podInitConfig, type PodInitFlags } from '../client/pod-init/config.js';
import { BaseChangedError, podInit, type PodInitResult } from '../client/pod-init/run.js';
import { openRegistry } from './registry-options.js';
import { cacheMaxBytes } from './remote.js';
import { DEFAULT_SOCKET, podInitLazy } from './pod-init-lazy.js';

function cacheOptions(o: Flags): { maxBytes?: number } {
  const maxBytes = cacheMaxBytes(o);
  return maxBytes !== undefined ? { maxBytes } : {};
}

type Flags = PodInitFlags & { cache?: string; cacheMax?: string; creds?: string; caCert?: string; json?: boolean; lazy?: boolean; socket?: string };

function describe(r: PodInitResult): string {
  if (r.action === 'skipped') return 'USE_PREBUILT_SNAPSHOT is not true: nothing to do (the pod boots its plain disk)\n';
  const mb = (r.bytesDownloaded / 1e6).toFixed(2);
  return `${r.action} ${r.ref} (${r.manifest ?? 'offline'}) at ${r.snapshot}${r.snapshotForm === 'overlay' ? ' (an overlay over a base on this node)' : ''}; ` +
    `instance overlay ${r.overlay} ${r.overlayAction}; ${mb} MB downloaded, ${r.seconds.toFixed(2)} s${r.offline ? ' (registry unreachable: used the snapshot on disk)' : ''}\n`;
}

export function registerPodInit(program: Command): void {
  program
    .command('pod-init')
    .description("fetch the emulator pod's snapshot (only what the node lacks) and make its instance overlay, as the existing emulator entrypoints expect")
    .option('--registry <host/repo>', 'the snapshot repository: host[:port]/repo or a URL (env SNAPSHOT_REGISTRY, default ghcr.io/mroie/qemu-snapshots)')
    .option('--tag <tag>', 'tag, repo:tag or digest (env SNAPSHOT_TAG, default win98-base)')
    .option('--dir <dir>', 'the snapshot directory (env SNAPSHOT_DIR, default /images)')
    .option('--disk <file>', 'where the snapshot goes (env DISK, default <dir>/win98.qcow2)')
    .option('--mode <mode>', 'persistent (keep the instance overlay) or ephemeral (recreate it every start) (env SNAPSHOT_MODE)')
    .option('--reset', 'recreate the instance overlay (env SNAPSHOT_RESET=true)')
    .option('--branch <name>', 'snapshot branch: <dir>/<branch>/base.qcow2, overlays beside it (env SNAPSHOT_BRANCH)')
    .option('--parent <file>', 'the image the instance overlay builds on (env SNAPSHOT_PARENT_DISK; default the snapshot)')
    .option('--pod-name <name>', 'the pod name whose ordinal numbers the overlay (env POD_NAME; loco-emulator-3 -> 3)')
    .option('--cache <dir>', 'the node cache (env SNAPYARD_CACHE, default <dir>/.snapyard-cache)')
    .option('--cache-max <size>', 'evict least recently used snapshots from the cache once it stores more than this (like 20G; env SNAPYARD_CACHE_MAX)')
    .option('--creds <user:pass>', 'registry credentials (else SNAPYARD_USERNAME/SNAPYARD_PASSWORD, else a Docker config file)')
    .option('--ca-cert <file>', 'also trust this CA certificate (env SNAPYARD_CA_CERT)')
    .option('--insecure', 'plain http for host[:port] registries, no certificate check for https (env SNAPYARD_INSECURE=true)')
    .option('--lazy', 'no download: serve the snapshot over NBD as a sidecar (snapyard mount) with the instance overlay backed by it (env SNAPSHOT_LAZY=true; docs/nbd.md)')
    .option('--socket <path>', `--lazy: the NBD socket (env SNAPSHOT_SOCKET, default ${DEFAULT_SOCKET})`)
    .option('--json', 'print one JSON object: action, ref, manifest, blob, snapshot, snapshotForm, overlay, overlayAction, bytesDownloaded, seconds, offline')
    .action(async (o: Flags) => {
      const cfg = podInitConfig(o);
      if (cfg.enabled && (o.lazy === true || /^(1|true|yes|on)$/i.test(process.env.SNAPSHOT_LAZY ?? ''))) {
        return podInitLazy(cfg, { ...o, cache: o.cache ?? process.env.SNAPYARD_CACHE ?? join(cfg.dir, '.snapyard-cache') });
      }
      const reg = openRegistry({ registry: cfg.registryUrl, insecure: cfg.insecure, ...(o.creds ? { creds: o.creds } : {}), ...(o.caCert ? { caCert: o.caCert } : {}) });
      const cache = cfg.enabled ? new ClientCache(o.cache ?? process.env.SNAPYARD_CACHE ?? join(cfg.dir, '.snapyard-cache'), cacheOptions(o)) : null;
      try {
        const r = await podInit(cfg, { registry: reg, cache });
        process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : describe(r));
      } catch (e) {
        if (!(e instanceof BaseChangedError)) throw e;
        process.stderr.write(`snapyard: ${e.code}: ${e.message}\n`);
        process.exitCode = 3;
      } finally {
        await cache?.close();
        await reg.close();
      }
    });
}

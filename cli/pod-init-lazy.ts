/**
 * `snapyard pod-init --lazy` (env SNAPSHOT_LAZY=true): the pod's disk without
 * the download. Instead of writing the snapshot and an overlay over it, it
 * runs `snapyard mount` in the foreground (a sidecar: a Kubernetes init
 * container with `restartPolicy: Always`, its socket in an emptyDir shared
 * with the QEMU container) with the instance overlay pod-init would make,
 * `<dir>[/<branch>]/win98_instance_<N>.qcow2`, backed by the export.
 * Persistent mode reuses the overlay (refused if it was made over another
 * snapshot: CONFLICT, exit 2, until SNAPSHOT_RESET=true); ephemeral mode or
 * a reset recreates it. docs/nbd.md.
 */
import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { PodInitConfig } from '../client/pod-init/config.js';
import { currentSnapshot, sidecarPath } from '../client/pod-init/sidecar.js';
import { mountCommand } from './mount.js';

export const DEFAULT_SOCKET = '/run/snapyard/nbd.sock';

export interface LazyFlags {
  socket?: string;
  cache: string;
  cacheMax?: string;
  creds?: string;
  caCert?: string;
  json?: boolean;
}

export async function podInitLazy(cfg: PodInitConfig, o: LazyFlags, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  await mkdir(dirname(cfg.overlayPath), { recursive: true });
  if (cfg.mode === 'ephemeral' || cfg.reset) {
    await rm(cfg.overlayPath, { force: true });
    await rm(sidecarPath(cfg.overlayPath), { force: true });
  }
  const ref = `${cfg.ref.repo}${cfg.ref.digest ? `@${cfg.ref.digest}` : `:${cfg.ref.tag}`}`;
  // The snapshot an earlier full pod-init left on the node (its sidecar still matching the file, a
  // standalone image) seeds the mount: its chunks are read, not fetched. Its index comes from the
  // cache by the sidecar's digest; without it there the disk is not used (never hashed before the first read).
  const seed = currentSnapshot(cfg.snapshotPath);
  await mountCommand(ref, {
    ...(seed && seed.backing === null ? { base: cfg.snapshotPath, baseDigest: seed.blob } : {}),
    socket: o.socket ?? env.SNAPSHOT_SOCKET ?? DEFAULT_SOCKET,
    overlay: cfg.overlayPath,
    cache: o.cache,
    registry: cfg.registryUrl,
    insecure: cfg.insecure,
    readTimeout: env.SNAPYARD_READ_TIMEOUT ?? '60',
    prefetchRate: env.SNAPYARD_PREFETCH_RATE ?? '50M',
    localCopy: env.SNAPYARD_LOCAL_COPY ?? '1G',
    ...(o.cacheMax !== undefined ? { cacheMax: o.cacheMax } : {}),
    ...(o.creds !== undefined ? { creds: o.creds } : {}),
    ...(o.caCert !== undefined ? { caCert: o.caCert } : {}),
    ...(o.json ? { json: true } : {}),
  });
}

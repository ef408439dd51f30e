/**
 * `snapyard pod-init`: leaves what an emulator container's entrypoint
 * expects (docs/pod-init.md): the snapshot at DISK (or
 * <dir>/<branch>/base.qcow2) and the pod's instance overlay
 * win98_instance_<N>.qcow2 over it, fetching only what the node lacks.
 *
 * Pods of one node start together on one shared directory: each file is
 * written under its own lock (<file>.lock), to a temporary name, fsync'ed
 * and renamed, so one pod downloads a snapshot while the others wait and
 * then reuse it. Every file carries a sidecar (<file>.snapyard.json) saying
 * what it holds, so a restart trusts it without hashing, and an instance
 * overlay whose parent changed is never reused over the wrong disk.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { SnapyardError, isSnapyardError } from '../../storage/errors.js';
import type { Digest } from '../../storage/digest.js';
import { Qcow2Index } from '../../storage/blobs/qcow2-index.js';
import { diskLayerOf as pickDiskLayer } from '../../storage/meta/manifest-facts.js';
import { decodeBlobIndex } from '../../storage/blobs/blob-index.js';
import { Qcow2Image } from '../../storage/qcow2/reader.js';
import { Qcow2Writer } from '../../storage/qcow2/writer.js';
import { dirtyClusters } from '../assemble.js';
import type { ClientCache } from '../cache.js';
import { hashFile } from '../file-index.js';
import { withFileLock } from '../file-lock.js';
import { carrySnapshots } from '../overlay-snapshots.js';
import { pull } from '../pull.js';
import type { Registry } from '../registry.js';
import { remoteIndex } from '../remote-index.js';
import type { PodInitConfig } from './config.js';
import { currentSnapshot, readSidecar, snapshotSidecar, writeSidecar, type OverlaySidecar, type SnapshotSidecar } from './sidecar.js';

export interface PodInitResult {
  action: 'skipped' | 'reused' | 'downloaded' | 'updated';
  ref: string;
  manifest: string | null;
  blob: string | null;
  snapshot: string;
  /** How the snapshot file was written: a full image, or an overlay over a base the node holds. */
  snapshotForm: 'full' | 'overlay' | null;
  overlay: string;
  overlayAction: 'reused' | 'created' | 'recreated' | 'none';
  bytesDownloaded: number;
  seconds: number;
  /** The registry could not be reached and the snapshot on disk was used as it is. */
  offline: boolean;
}

/** Refused: a persistent overlay whose parent changed (exit code 3). */
export class BaseChangedError extends SnapyardError {
  constructor(message: string) {
    super('CONFLICT', message);
    this.name = 'BaseChangedError';
  }
}

const NETWORK = new Set(['REGISTRY_UNREACHABLE', 'CONNECTION_LOST', 'TLS_FAILED']);

/** The manifest's disk layer (storage/meta/manifest-facts.ts diskLayerOf: what the server's _delta picks too). */
function diskLayerDigest(manifest: Buffer): Digest | null {
  try {
    const doc = JSON.parse(manifest.toString('utf8')) as { layers?: Array<{ digest: string; mediaType: string; size: number }> };
    return (pickDiskLayer(doc.layers ?? [])?.digest as Digest | undefined) ?? null;
  } catch {
    return null;
  }
}

/** Standalone snapshots pod-init left in the node directory (and one level below), still as written. */
function nodeSnapshots(dir: string, except: string): Array<{ path: string; sidecar: SnapshotSidecar }> {
  const out: Array<{ path: string; sidecar: SnapshotSidecar }> = [];
  const scan = (d: string, depth: number) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = join(d, n);
      if (n.endsWith('.qcow2') && p !== except) {
        const s = currentSnapshot(p);
        if (s && s.backing === null) out.push({ path: p, sidecar: s });
      } else if (depth > 0 && !n.includes('.')) {
        try {
          if (statSync(p).isDirectory()) scan(p, depth - 1);
        } catch {
          /* gone */
        }
      }
    }
  };
  scan(dir, 1);
  return out;
}

async function ensureSnapshot(cfg: PodInitConfig, reg: Registry, cache: ClientCache | null, out: PodInitResult): Promise<SnapshotSidecar> {
  const path = cfg.snapshotPath;
  mkdirSync(dirname(path), { recursive: true });
  return withFileLock(path, async () => {
    let cur = currentSnapshot(path);
    // An overlay snapshot is only as good as its base: a base deleted or replaced makes it unusable.
    if (cur?.backing && currentSnapshot(cur.backing)?.blob !== cur.backingBlob) cur = null;
    let manifest: { bytes: Buffer; digest: string };
    try {
      manifest = await reg.getManifest(cfg.ref.repo, cfg.ref.reference);
    } catch (e) {
      if (cur && isSnapyardError(e) && NETWORK.has(e.code)) {
        out.offline = true;
        out.action = 'reused';
        return cur;
      }
      throw e;
    }
    out.manifest = manifest.digest;
    const blob = diskLayerDigest(manifest.bytes);
    if (cur && blob && cur.blob === blob) {
      out.action = 'reused';
      return cur;
    }
    if (!cache) throw new SnapyardError('INVALID_ARGUMENT', 'pod-init needs a cache directory (--cache or SNAPYARD_CACHE)');
    // The target's index, planned against every standalone snapshot the node holds.
    const candidates = nodeSnapshots(cfg.dir, path);
    const have = [...new Set([...candidates.map((c) => c.sidecar.blob), ...cache.held(null)])].slice(0, 32);
    const remote = await remoteIndex(reg, cfg.ref, have, (d) => cache.readIndex(d));
    let base: { path: string; sidecar: SnapshotSidecar; dirty: number } | null = null;
    if (remote.index instanceof Qcow2Index && !remote.index.layout.hasBacking) {
      const cs = remote.index.layout.clusterSize;
      for (const c of candidates) {
        const bytes = cache.readIndex(c.sidecar.blob);
        if (!bytes) continue;
        const bi = decodeBlobIndex(bytes);
        if (!(bi instanceof Qcow2Index) || bi.layout.hasBacking || bi.layout.clusterSize !== cs) continue;
        const dirty = dirtyClusters(remote.index, bi, cs).length;
        if (!base || dirty < base.dirty) base = { ...c, dirty };
      }
      // An overlay only when it is smaller than the image it stands for.
      if (base && base.dirty * cs >= remote.index.size) base = null;
    }
    const existed = existsSync(path);
    const seeds = base ? base.path : candidates[0]?.path;
    const s = await pull(cfg.ref, {
      registry: reg,
      cache,
      output: path,
      ...(seeds ? { base: seeds } : {}),
      overlay: base !== null,
      absoluteBacking: true,
      remote,
    });
    out.bytesDownloaded += s.bytesDownloaded;
    out.snapshotForm = base ? 'overlay' : 'full';
    out.action = existed ? 'updated' : 'downloaded';
    const sc = snapshotSidecar(path, {
      ref: out.ref,
      manifest: manifest.digest,
      blob: remote.index.blobDigest,
      backing: base ? base.path : null,
      backingBlob: base ? base.sidecar.blob : null,
    });
    writeSidecar(path, sc);
    return sc;
  });
}

/** The digest of the instance overlay's parent: from its sidecar, else hashed (remembered by the cache). */
async function parentBlob(path: string, cache: ClientCache | null): Promise<Digest> {
  const s = currentSnapshot(path);
  if (s) return s.blob;
  if (!existsSync(path)) throw new SnapyardError('NOT_FOUND', `the parent disk ${path} does not exist`);
  const known = cache?.fileDigest(path);
  if (known) return known;
  const d = await hashFile(path);
  cache?.rememberFile(path, d);
  return d;
}

async function ensureOverlay(cfg: PodInitConfig, parentDigest: Digest, out: PodInitResult): Promise<void> {
  const path = cfg.overlayPath;
  const parent = cfg.parentPath;
  await withFileLock(path, async () => {
    const exists = existsSync(path);
    if (exists && cfg.mode === 'persistent' && !cfg.reset) {
      const sc = readSidecar<OverlaySidecar>(path, 'overlay');
      if (sc && sc.parent === parent && sc.parentBlob === parentDigest) {
        out.overlayAction = 'reused';
        return;
      }
      const was = sc ? `${sc.parent} at ${sc.parentBlob}` : 'an unrecorded parent';
      throw new BaseChangedError(
        `the persistent instance overlay ${path} was made over ${was}; its parent is now ${parent} at ${parentDigest}. ` +
          'Its writes belong to another disk: set SNAPSHOT_RESET=true (or --reset) to recreate it, or restore the old parent',
      );
    }
    const img = Qcow2Image.open(parent);
    const virtualSize = img.virtualSize;
    img.close();
    rmSync(`${path}.snapyard.json`, { force: true });
    const w = await Qcow2Writer.create(path, { virtualSize, clusterBits: 16, backingFile: parent, backingFormat: 'qcow2' });
    let snapshots: string[];
    try {
      snapshots = (await carrySnapshots(parent, w)).carried.map((c) => c.name);
      await w.finish();
    } finally {
      await w.abort();
    }
    writeSidecar(path, { kind: 'overlay', parent, parentBlob: parentDigest, created: new Date().toISOString(), snapshots });
    out.overlayAction = exists ? 'recreated' : 'created';
  });
}

export async function podInit(cfg: PodInitConfig, opts: { registry: Registry; cache: ClientCache | null }): Promise<PodInitResult> {
  const t0 = performance.now();
  const out: PodInitResult = {
    action: 'skipped',
    ref: `${cfg.ref.repo}${cfg.ref.tag ? `:${cfg.ref.tag}` : `@${cfg.ref.digest}`}`,
    manifest: null,
    blob: null,
    snapshot: cfg.snapshotPath,
    snapshotForm: null,
    overlay: cfg.overlayPath,
    overlayAction: 'none',
    bytesDownloaded: 0,
    seconds: 0,
    offline: false,
  };
  if (!cfg.enabled) return out;
  const snap = await ensureSnapshot(cfg, opts.registry, opts.cache, out);
  out.blob = snap.blob;
  if (out.snapshotForm === null) out.snapshotForm = snap.backing ? 'overlay' : 'full';
  const parentDigest = cfg.parentPath === cfg.snapshotPath ? snap.blob : await parentBlob(cfg.parentPath, opts.cache);
  await ensureOverlay(cfg, parentDigest, out);
  out.seconds = (performance.now() - t0) / 1000;
  return out;
}

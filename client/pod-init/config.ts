/**
 * What `snapyard pod-init` is asked to do: the environment the existing
 * emulator containers are configured by (USE_PREBUILT_SNAPSHOT,
 * SNAPSHOT_REGISTRY, SNAPSHOT_TAG, SNAPSHOT_DIR, DISK, SNAPSHOT_MODE,
 * SNAPSHOT_RESET, SNAPSHOT_BRANCH, SNAPSHOT_PARENT_DISK, POD_NAME), with the
 * same defaults, each overridden by its flag.
 */
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { isDigest } from '../../storage/digest.js';
import { SnapyardError } from '../../storage/errors.js';
import { isRepoName, TAG_RE } from '../../storage/protocol/ref-grammar.js';
import type { Ref } from '../ref.js';

export interface PodInitFlags {
  registry?: string;
  tag?: string;
  dir?: string;
  disk?: string;
  mode?: string;
  reset?: boolean;
  branch?: string;
  parent?: string;
  podName?: string;
  insecure?: boolean;
}

export interface PodInitConfig {
  /** USE_PREBUILT_SNAPSHOT: false means nothing to do (the pod boots its plain disk). */
  enabled: boolean;
  /** The registry's URL (https unless insecure) and the snapshot to fetch. */
  registryUrl: string;
  ref: Ref;
  dir: string;
  /** Where the snapshot is written (DISK, or <dir>/<branch>/base.qcow2). */
  snapshotPath: string;
  /** What the instance overlay builds on (SNAPSHOT_PARENT_DISK, else the snapshot). */
  parentPath: string;
  /** <dir>[/<branch>]/win98_instance_<N>.qcow2 */
  overlayPath: string;
  mode: 'persistent' | 'ephemeral';
  reset: boolean;
  ordinal: number;
  insecure: boolean;
}

const truthy = (v: string | undefined) => v !== undefined && /^(1|true|yes|on)$/i.test(v.trim());

/** `loco-emulator-3` -> 3; 0 when there is no trailing number (or no name). */
export function ordinalOf(podName: string | undefined): number {
  const m = /-(\d+)$/.exec(podName ?? '') ?? /^(\d+)$/.exec(podName ?? '');
  return m ? Number(m[1]) : 0;
}

/**
 * SNAPSHOT_REGISTRY (`host[:port]/repo`, or a URL whose path is the
 * repository) and SNAPSHOT_TAG (`tag`, `repo:tag`, `sha256:...` or
 * `repo@sha256:...`) -> the registry URL and the reference.
 */
export function parseSnapshotSource(registry: string, tag: string, insecure: boolean): { registryUrl: string; ref: Ref } {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(registry);
  let u: URL;
  try {
    u = new URL(hasScheme ? registry : `${insecure ? 'http' : 'https'}://${registry}`);
  } catch {
    throw new SnapyardError('INVALID_ARGUMENT', `SNAPSHOT_REGISTRY ${JSON.stringify(registry)} is not host[:port]/repository or a URL`);
  }
  let repo = u.pathname.replace(/^\/+|\/+$/g, '');
  const registryUrl = `${u.protocol}//${u.host}`;
  let reference = tag;
  const at = tag.indexOf('@');
  const colon = tag.lastIndexOf(':');
  if (at > 0) {
    repo = tag.slice(0, at);
    reference = tag.slice(at + 1);
  } else if (colon > 0 && !isDigest(tag)) {
    repo = tag.slice(0, colon);
    reference = tag.slice(colon + 1);
  }
  if (!isRepoName(repo)) throw new SnapyardError('INVALID_ARGUMENT', `no valid repository in SNAPSHOT_REGISTRY ${JSON.stringify(registry)} / SNAPSHOT_TAG ${JSON.stringify(tag)}`);
  if (isDigest(reference)) return { registryUrl, ref: { repo, reference, digest: reference } };
  if (!TAG_RE.test(reference)) throw new SnapyardError('INVALID_ARGUMENT', `SNAPSHOT_TAG ${JSON.stringify(tag)} is not a tag, repo:tag or a digest`);
  return { registryUrl, ref: { repo, reference, tag: reference } };
}

export function podInitConfig(flags: PodInitFlags, env: NodeJS.ProcessEnv = process.env): PodInitConfig {
  const insecure = flags.insecure === true || truthy(env.SNAPYARD_INSECURE);
  const registry = flags.registry ?? env.SNAPSHOT_REGISTRY ?? 'ghcr.io/mroie/qemu-snapshots';
  const tag = flags.tag ?? env.SNAPSHOT_TAG ?? 'win98-base';
  const { registryUrl, ref } = parseSnapshotSource(registry, tag, insecure);
  const dir = resolve(flags.dir ?? env.SNAPSHOT_DIR ?? '/images');
  const branch = flags.branch ?? (env.SNAPSHOT_BRANCH || undefined);
  if (branch !== undefined && !/^[A-Za-z0-9._-]{1,128}$/.test(branch) || branch === '.' || branch === '..') {
    throw new SnapyardError('INVALID_ARGUMENT', `SNAPSHOT_BRANCH ${JSON.stringify(branch)} must be a plain name (letters, digits, . _ -)`);
  }
  const disk = flags.disk ?? env.DISK ?? join(dir, 'win98.qcow2');
  const snapshotPath = branch ? join(dir, branch, 'base.qcow2') : isAbsolute(disk) ? disk : resolve(dir, disk);
  const parent = flags.parent ?? (env.SNAPSHOT_PARENT_DISK || undefined);
  const mode = (flags.mode ?? env.SNAPSHOT_MODE ?? 'persistent').toLowerCase();
  if (mode !== 'persistent' && mode !== 'ephemeral') throw new SnapyardError('INVALID_ARGUMENT', `SNAPSHOT_MODE must be persistent or ephemeral, not ${JSON.stringify(mode)}`);
  const ordinal = ordinalOf(flags.podName ?? env.POD_NAME);
  return {
    enabled: flags.registry !== undefined || flags.tag !== undefined ? true : truthy(env.USE_PREBUILT_SNAPSHOT),
    registryUrl,
    ref,
    dir,
    snapshotPath,
    parentPath: parent ? resolve(parent) : snapshotPath,
    overlayPath: join(branch ? dirname(snapshotPath) : dir, `win98_instance_${ordinal}.qcow2`),
    mode,
    reset: flags.reset === true || truthy(env.SNAPSHOT_RESET),
    ordinal,
    insecure,
  };
}

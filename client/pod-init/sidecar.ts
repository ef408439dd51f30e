/**
 * What pod-init knows about the files it leaves, kept beside each as
 * `<file>.snapyard.json`: for a snapshot, the blob it holds (and the file's
 * identity when written, so a restart trusts it without hashing); for an
 * instance overlay, the parent it was made over and that parent's digest, so
 * a parent that changed under it is noticed.
 */
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import type { Digest } from '../../storage/digest.js';

export interface SnapshotSidecar {
  kind: 'snapshot';
  ref: string;
  manifest: string;
  blob: Digest;
  /** The file is an overlay over this base file (absolute path), or null when standalone. */
  backing: string | null;
  backingBlob: Digest | null;
  size: number;
  mtimeMs: number;
  ino: number;
}

export interface OverlaySidecar {
  kind: 'overlay';
  parent: string;
  parentBlob: Digest;
  created: string;
  /** Names of the parent's internal snapshots carried into the overlay (so `-loadvm NAME` works on it). */
  snapshots?: string[];
}

export const sidecarPath = (file: string) => `${file}.snapyard.json`;

export function readSidecar<T extends SnapshotSidecar | OverlaySidecar>(file: string, kind: T['kind']): T | null {
  const p = sidecarPath(file);
  if (!existsSync(p)) return null;
  try {
    const v = JSON.parse(readFileSync(p, 'utf8')) as T;
    return v.kind === kind ? v : null;
  } catch {
    return null;
  }
}

export function writeSidecar(file: string, v: SnapshotSidecar | OverlaySidecar): void {
  const p = sidecarPath(file);
  const tmp = `${p}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(v, null, 1)}\n`);
  renameSync(tmp, p);
}

/** The snapshot sidecar of `file` when it still describes the file as it is (same inode, size, mtime). */
export function currentSnapshot(file: string): SnapshotSidecar | null {
  const s = readSidecar<SnapshotSidecar>(file, 'snapshot');
  if (!s || !existsSync(file)) return null;
  const st = statSync(file);
  return st.ino === s.ino && st.size === s.size && st.mtimeMs === s.mtimeMs ? s : null;
}

export function snapshotSidecar(file: string, v: Omit<SnapshotSidecar, 'kind' | 'size' | 'mtimeMs' | 'ino'>): SnapshotSidecar {
  const st = statSync(file);
  return { kind: 'snapshot', ...v, size: st.size, mtimeMs: st.mtimeMs, ino: st.ino };
}

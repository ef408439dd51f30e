/**
 * Boot traces: which guest ranges a mount was asked for in its first
 * seconds, in the order first asked, kept in the registry as an OCI
 * artifact whose `subject` is the snapshot's manifest (found again through
 * the referrers API), so the next mount of that snapshot fetches those
 * ranges first.
 *
 * The artifact: an image manifest with artifactType TRACE_ARTIFACT, the
 * empty config, one layer (TRACE_LAYER): JSON
 *   { "schemaVersion": 1, "blob": "sha256:...", "size": N, "ranges": [[offset, length], ...] }
 * ranges of the guest view (size: its size) in the order first read, a read
 * continuing the last range merged into it, at most MAX_RANGES.
 */
import { sha256, type Digest } from '../../storage/digest.js';
import { SnapyardError } from '../../storage/errors.js';
import type { Registry } from '../registry.js';
import { MT_EMPTY, MT_MANIFEST } from '../push.js';

export const TRACE_ARTIFACT = 'application/vnd.snapyard.boot-trace';
export const TRACE_LAYER = 'application/vnd.snapyard.boot-trace.v1+json';
const MAX_RANGES = 65_536;
const MAX_TRACE_BYTES = 4 * 1024 * 1024;

export type Range = [offset: number, length: number];

/** Collects reads in the order first seen, merging a read that continues the last range. */
export class TraceRecorder {
  readonly ranges: Range[] = [];
  private open = true;
  /** Called at the first read (the recording window starts there). */
  onFirst: (() => void) | null = null;

  add(offset: number, length: number): void {
    if (!this.open || this.ranges.length >= MAX_RANGES) return;
    if (this.ranges.length === 0) this.onFirst?.();
    const last = this.ranges[this.ranges.length - 1];
    if (last && last[0] + last[1] === offset) last[1] += length;
    else this.ranges.push([offset, length]);
  }

  /** Stops recording; returns the ranges. */
  stop(): Range[] {
    this.open = false;
    return this.ranges;
  }
}

export interface TraceRef {
  manifest: Digest;
  layer: Digest;
  ranges: number;
}

/** Pushes a trace of `blob` as an artifact referring to the snapshot's manifest (by digest, no tag). */
export async function pushTrace(reg: Registry, repo: string, subject: { digest: string; mediaType: string; size: number }, blob: { digest: Digest; size: number }, ranges: Range[]): Promise<TraceRef> {
  const layer = Buffer.from(JSON.stringify({ schemaVersion: 1, blob: blob.digest, size: blob.size, ranges }));
  const config = Buffer.from('{}');
  await reg.putSmallBlob(repo, sha256(config), config);
  await reg.putSmallBlob(repo, sha256(layer), layer);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MT_MANIFEST,
    artifactType: TRACE_ARTIFACT,
    config: { mediaType: MT_EMPTY, digest: sha256(config), size: config.byteLength },
    layers: [{ mediaType: TRACE_LAYER, digest: sha256(layer), size: layer.byteLength }],
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
    annotations: { 'org.opencontainers.image.created': new Date().toISOString() },
  }));
  const digest = sha256(manifest);
  await reg.putManifest(repo, digest, manifest, MT_MANIFEST);
  return { manifest: digest, layer: sha256(layer), ranges: ranges.length };
}

interface Descriptor {
  digest: string;
  artifactType?: string;
  annotations?: Record<string, string>;
}

/** The newest trace of `blob` referring to the manifest, or null (none, or the registry lacks the referrers API). */
export async function fetchTrace(reg: Registry, repo: string, manifest: string, blob: { digest: Digest; size: number }): Promise<{ ref: TraceRef; ranges: Range[] } | null> {
  const res = await reg.request('GET', `/v2/${repo}/referrers/${manifest}?artifactType=${encodeURIComponent(TRACE_ARTIFACT)}`, { ok: (s) => s === 200 || s === 404 });
  if (res.statusCode === 404) {
    await res.body.dump();
    return null;
  }
  const index = (await res.body.json()) as { manifests?: Descriptor[] };
  const traces = (index.manifests ?? []).filter((d) => d.artifactType === TRACE_ARTIFACT);
  const created = (d: Descriptor) => d.annotations?.['org.opencontainers.image.created'] ?? '';
  traces.sort((a, b) => created(b).localeCompare(created(a)));
  for (const t of traces) {
    const m = await reg.getManifest(repo, t.digest);
    if (sha256(m.bytes) !== t.digest) continue;
    const layer = (JSON.parse(m.bytes.toString('utf8')) as { layers?: Array<{ mediaType: string; digest: string; size: number }> }).layers?.find((l) => l.mediaType === TRACE_LAYER);
    if (!layer || layer.size > MAX_TRACE_BYTES) continue;
    const got = await reg.request('GET', `/v2/${repo}/blobs/${layer.digest}`);
    const bytes = Buffer.from(await got.body.arrayBuffer());
    if (sha256(bytes) !== layer.digest) throw new SnapyardError('DIGEST_MISMATCH', `boot trace ${layer.digest} does not hash to its name`);
    const ranges = parseTrace(bytes, blob);
    if (ranges) return { ref: { manifest: t.digest as Digest, layer: layer.digest as Digest, ranges: ranges.length }, ranges };
  }
  return null;
}

/** The trace's ranges if it is a trace of this blob and every range lies inside [0, size); else null. */
function parseTrace(bytes: Buffer, blob: { digest: Digest; size: number }): Range[] | null {
  let t: { schemaVersion?: unknown; blob?: unknown; ranges?: unknown };
  try {
    t = JSON.parse(bytes.toString('utf8')) as typeof t;
  } catch {
    return null;
  }
  if (t.schemaVersion !== 1 || t.blob !== blob.digest || !Array.isArray(t.ranges) || t.ranges.length > MAX_RANGES) return null;
  const out: Range[] = [];
  for (const r of t.ranges as unknown[]) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1])) return null;
    const [o, l] = r as [number, number];
    if (o < 0 || l <= 0 || o + l > blob.size) return null;
    out.push([o, l]);
  }
  return out;
}

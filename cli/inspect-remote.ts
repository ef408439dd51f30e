/**
 * `snapyard inspect REF [--json]`: the same facts as `inspect FILE`, for a
 * snapshot in the registry, without downloading the image: the chunk index
 * (`_delta`, guest layout and chunks) plus the image's first cluster (a ranged
 * GET) for the header, and the manifest for lineage.
 *
 * --json keys: those of `inspect FILE` (cli/inspect.ts) where they apply
 * (file is the REF; snapshots has only count), plus
 *   ref, manifestDigest, blobDigest, layout ("qcow2": guest view + recipe,
 *   "bytes": byte chunks), chunks.residue {count, bytes} (host bytes outside
 *   the guest view), indexBytes, base {blob, backingFile, subject} | null.
 */
import { SnapyardError } from '../storage/errors.js';
import { clusterSizeFromPrefix, parseHeader, HEADER_PREFIX_LENGTH } from '../storage/qcow2/format.js';
import { Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { qcow2IndexFacts } from '../storage/blobs/qcow2-index-facts.js';
import { chunkSet } from '../storage/blobs/blob-index.js';
import { chunkListStats as stats } from '../storage/blobs/chunk-stats.js';
import { parseRef } from '../client/ref.js';
import type { Registry } from '../client/registry.js';
import { remoteIndex } from '../client/remote-index.js';
import { ANN_BACKING_FILE, ANN_BASE_BLOB } from '../client/push.js';
import { openRegistry, type RegistryFlags } from './registry-options.js';

async function rangeGet(reg: Registry, repo: string, digest: string, n: number): Promise<Buffer> {
  const res = await reg.request('GET', `/v2/${repo}/blobs/${digest}`, { headers: { range: `bytes=0-${n - 1}` } });
  return Buffer.from(await res.body.arrayBuffer());
}

export async function inspectRef(refStr: string, o: RegistryFlags & { json?: boolean }, out: NodeJS.WritableStream = process.stdout): Promise<Record<string, unknown>> {
  const ref = parseRef(refStr);
  const reg = openRegistry(o);
  try {
    const r = await remoteIndex(reg, ref, [], () => null);
    const manifest = JSON.parse((await reg.getManifest(ref.repo, r.answer.manifest.digest)).bytes.toString('utf8')) as {
      annotations?: Record<string, string>;
      subject?: { digest: string };
    };
    const ann = manifest.annotations ?? {};
    const base = ann[ANN_BASE_BLOB] ? { blob: ann[ANN_BASE_BLOB], backingFile: ann[ANN_BACKING_FILE] ?? null, subject: manifest.subject?.digest ?? null } : null;
    const ix = r.index;
    const common = {
      file: refStr,
      ref: refStr,
      manifestDigest: r.answer.manifest.digest,
      blobDigest: r.answer.blob.digest,
      layout: ix instanceof Qcow2Index ? 'qcow2' : 'bytes',
      indexBytes: r.bytes.byteLength,
      uniqueChunks: chunkSet(ix).size,
      base,
    };
    let report: Record<string, unknown>;
    if (ix instanceof Qcow2Index) {
      const prefix = await rangeGet(reg, ref.repo, ix.blobDigest, Math.min(ix.size, HEADER_PREFIX_LENGTH));
      const cs = clusterSizeFromPrefix(prefix, ix.size);
      const h = parseHeader(await rangeGet(reg, ref.repo, ix.blobDigest, Math.min(ix.size, cs)), ix.size);
      report = { ...common, ...qcow2IndexFacts(h, ix) };
    } else {
      report = { ...common, format: 'raw', size: ix.size, chunks: stats(ix.lists()) };
    }
    if (o.json) out.write(`${JSON.stringify(report)}\n`);
    else out.write(human(report));
    return report;
  } finally {
    await reg.close();
  }
}

function human(r: Record<string, unknown>): string {
  const rows: Array<[string, string]> = [];
  const add = (k: string, v: unknown) => rows.push([k, typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)]);
  for (const [k, v] of Object.entries(r)) if (k !== 'file') add(k, v ?? '-');
  const w = Math.max(...rows.map(([k]) => k.length)) + 1;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(w)} ${v}\n`).join('');
}

export function looksLikeRef(s: string): boolean {
  try {
    parseRef(s);
    return true;
  } catch (e) {
    if (e instanceof SnapyardError) return false;
    throw e;
  }
}

/**
 * The pull half of the delta protocol (docs/delta-protocol.md):
 *   POST /snapyard/v1/<name>/_delta   what the target is, its index (as a
 *                                     difference from an index the client
 *                                     holds), and what the client lacks
 *   POST /snapyard/v1/<name>/_chunks  the chunks it lacks, in bulk, as stored
 *                                     or delta-compressed against chunks it holds
 */
import { OciError } from '../oci-error.js';
import { jsonBody } from '../http-util.js';
import { respond, sendStream, type RequestContext } from '../context.js';
import { chunksRequest, deltaRequest } from '../../storage/protocol/api.js';
import { resolveManifest } from './manifests.js';
import { isDigest, type Digest } from '../../storage/digest.js';
import type { BlobRecord, ManifestRecord } from '../../storage/meta/metadata.js';
import type { DeltaService } from '../delta-service.js';
import { diskLayerOf } from '../../storage/meta/manifest-facts.js';

export function diskLayer(m: ManifestRecord): { digest: Digest; mediaType: string; size: number } {
  let doc: { layers?: Array<{ digest: string; mediaType: string; size: number }> };
  try {
    doc = JSON.parse(m.content.toString('utf8')) as typeof doc;
  } catch {
    doc = {};
  }
  const pick = diskLayerOf((doc.layers ?? []).filter((l) => isDigest(l.digest)));
  if (!pick) throw new OciError(400, 'MANIFEST_INVALID', `manifest ${m.digest} has no layers to pull`);
  return { digest: pick.digest as Digest, mediaType: pick.mediaType, size: pick.size };
}

async function linkedBlob(ctx: RequestContext, name: string, d: Digest): Promise<BlobRecord> {
  const blob = await ctx.store.blobs.stat(name, d);
  if (!blob) throw new OciError(404, 'BLOB_UNKNOWN', `blob ${d} is not in ${name}`, { digest: d });
  return blob;
}

export async function deltaPlan(ctx: RequestContext, svc: DeltaService, name: string, onPlanned?: (blobSize: number) => void): Promise<Response> {
  const req = await jsonBody(ctx.incoming, deltaRequest, 64 * 1024);
  const manifest = await resolveManifest(ctx, name, req.target);
  const layer = diskLayer(manifest);
  const blob = await linkedBlob(ctx, name, layer.digest);
  // The same target over the same held blobs is planned once (pods pull the same few pairs).
  const key = `${manifest.digest}/${blob.digest}/${[...new Set(req.have)].sort().join(',')}`;
  let body = svc.plans.get(key);
  if (!body) {
    body = Buffer.from(JSON.stringify(await plan(ctx, svc, manifest, layer.mediaType, blob, req.have)));
    svc.plans.set(key, body);
  }
  onPlanned?.(blob.size);
  return respond(200, { 'Content-Type': 'application/json' }, body);
}

/** What a client holding `have` lacks of `blob`, and the blob's index as a difference from the held index sharing the most chunks. */
async function plan(ctx: RequestContext, svc: DeltaService, manifest: ManifestRecord, mediaType: string, blob: BlobRecord, have: string[]) {
  const target = await svc.chunksOf(blob);
  const sets: Array<Map<string, number>> = [];
  const known: Digest[] = [];
  let base: BlobRecord | null = null;
  let best = -1;
  for (const h of have) {
    const rec = await ctx.store.meta.getBlob(h as Digest);
    if (!rec) continue;
    known.push(rec.digest);
    const set = await svc.chunksOf(rec);
    sets.push(set);
    let shared = 0;
    for (const k of target.keys()) if (set.has(k)) shared++;
    if (shared > best) {
      best = shared;
      base = rec;
    }
  }
  let missing = 0;
  let missingBytes = 0;
  for (const [k, len] of target) {
    if (!sets.some((set) => set.has(k))) {
      missing++;
      missingBytes += len;
    }
  }
  const diff = await svc.indexDiff(blob, base);
  return {
    manifest: { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.size },
    blob: { digest: blob.digest, size: blob.size, mediaType },
    index: { digest: blob.indexDigest, base: base?.digest ?? null, encoding: 'zstd', data: diff.toString('base64') },
    have: known,
    missing: { chunks: missing, bytes: missingBytes },
  };
}

export async function sendChunks(ctx: RequestContext, svc: DeltaService, name: string): Promise<Response> {
  const req = await jsonBody(ctx.incoming, chunksRequest, 8 * 1024 * 1024);
  const blob = await linkedBlob(ctx, name, req.blob as Digest);
  const set = await svc.chunksOf(blob);
  // Each chunk once: a list repeating one chunk would make a small request cost the server (and the wire) without bound.
  const asked = new Set<string>();
  for (const c of req.chunks) {
    if (!set.has(c)) throw new OciError(404, 'BLOB_UNKNOWN', `chunk sha256:${c} is not part of blob ${blob.digest}`, { chunk: `sha256:${c}` });
    if (asked.has(c)) throw new OciError(400, 'UNSUPPORTED', `chunk sha256:${c} is asked for twice`, { chunk: `sha256:${c}` });
    asked.add(c);
  }
  const have = await svc.encoder.prepare(req.have as Digest[]);
  await ctx.store.chunks.prepareReads?.(req.chunks.map((c) => `sha256:${c}` as Digest));
  if (req.estimate) {
    let wire = 0;
    let raw = 0;
    for (const c of req.chunks) {
      const f = await svc.encoder.encode(Buffer.from(c, 'hex'), have);
      wire += f.header.byteLength + f.payload.byteLength;
      raw += f.rawLength;
    }
    return respond(200, { 'Content-Type': 'application/json' }, JSON.stringify({ chunks: req.chunks.length, rawBytes: raw, wireBytes: wire }));
  }
  async function* frames(): AsyncGenerator<readonly Uint8Array[]> {
    // A few chunks are prepared ahead of the socket.
    const ahead: Array<Promise<{ header: Buffer; payload: Buffer }>> = [];
    let next = 0;
    const fill = () => {
      while (ahead.length < 8 && next < req.chunks.length) {
        const p = svc.encoder.encode(Buffer.from(req.chunks[next++]!, 'hex'), have);
        p.catch(() => {});
        ahead.push(p);
      }
    };
    fill();
    while (ahead.length > 0) {
      const f = await ahead.shift()!;
      fill();
      // Header and payload as they are (the payload may be a cached frame's): no copy, no new buffer per frame.
      yield [f.header, f.payload];
    }
  }
  return sendStream(ctx, 200, { 'Content-Type': 'application/vnd.snapyard.chunks.v1' }, frames());
}

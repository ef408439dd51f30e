/**
 * The push half of the delta protocol (docs/delta-protocol.md):
 *   POST /snapyard/v1/<name>/_missing  a compact index (digest prefixes): which entries the server lacks
 *   POST /snapyard/v1/<name>/_upload   the chunks it lacks (one zstd stream of frames, or their stored forms), each verified
 *   POST /snapyard/v1/<name>/_commit   the blob made from the index: rebuilt, hashed, made visible
 *   GET  /snapyard/v1/<name>/_blobs/<digest>/manifests   manifests of <name> that use a blob (lineage)
 */
import { OciError } from '../oci-error.js';
import { jsonBody, readLimited } from '../http-util.js';
import { commitRequest } from '../../storage/protocol/api.js';
import { header, respond, type RequestContext } from '../context.js';
import { checkDigest } from '../names.js';
import { decodeBlobIndex, distinctChunks, type BlobIndex } from '../../storage/blobs/blob-index.js';
import { readBlob } from '../../storage/blobs/blob-reader.js';
import { digestFromRaw, localDigester, type Digest } from '../../storage/digest.js';
import { isSnapyardError, SnapyardError } from '../../storage/errors.js';
import { unzstdBounded } from '../../storage/zstd-stream.js';
import { checkClaimedIndex } from '../../storage/blobs/commit-check.js';
import { decompressWithPrefix, readUploadFrames } from '../../storage/protocol/wire.js';
import { readUploadRecords, RECORDS_UPLOAD_TYPE } from '../../storage/protocol/record-upload.js';
import { FRAMES_UPLOAD_TYPE, framesError, uploadFrames } from './push-delta.js';
import type { DeltaService } from '../delta-service.js';
import { pinningWriter, type PinLease } from '../../storage/coord/chunk-pins.js';

const ZERO = Buffer.alloc(32);

/** Decompresses a zstd body with a running cap (storage/zstd-stream.ts): 413 past `limit`, 400 when it is not zstd. */
async function* unzstd(source: AsyncIterable<Uint8Array>, limit: number, what: string): AsyncGenerator<Buffer> {
  try {
    yield* unzstdBounded(source, limit, what);
  } catch (e) {
    if (isSnapyardError(e, 'LIMIT_EXCEEDED')) throw new OciError(413, 'SIZE_INVALID', e.message, e.detail);
    if (isSnapyardError(e, 'SIZE_INVALID')) throw new OciError(400, 'SIZE_INVALID', e.message);
    throw e;
  }
}

/** Prefixes resolved per call of the chunk store. */
const RESOLVE_BATCH = 4096;

/**
 * Decodes a compact index, its prefixes looked up in the store in batches
 * (a first pass collects them, one lookup per RESOLVE_BATCH distinct
 * prefixes, then the index is decoded with the answers); `missing` collects
 * the entries it cannot resolve. With `lease`, every chunk found is pinned
 * (GC keeps what the client was told exists).
 */
async function expand(svc: DeltaService, compact: Buffer, width: number, missing: number[] | null, lease?: PinLease): Promise<BlobIndex> {
  const chunks = svc.store.chunks;
  try {
    // A prefix repeated (zero chunks, or a hostile index) is looked up once.
    const prefixes = new Map<string, Buffer>();
    decodeBlobIndex(compact, width, (prefix) => {
      prefixes.set(prefix.toString('latin1'), prefix);
      return ZERO;
    });
    const found = new Map<string, Buffer | null | 'ambiguous'>();
    const keys = [...prefixes.keys()];
    for (let i = 0; i < keys.length; i += RESOLVE_BATCH) {
      const part = keys.slice(i, i + RESOLVE_BATCH).map((k) => prefixes.get(k)!);
      const hits =
        width === 32
          ? (await chunks.rawLengths(part, { touch: true })).map((len, j) => (len !== null ? Buffer.from(part[j]!) : null))
          : await chunks.resolvePrefixes(part, { touch: true });
      hits.forEach((h, j) => found.set(keys[i + j]!, h));
    }
    return decodeBlobIndex(compact, width, (prefix, entry) => {
      const full = found.get(prefix.toString('latin1'));
      if (full instanceof Buffer) {
        lease?.pin(digestFromRaw(full));
        return full;
      }
      if (missing) {
        missing.push(entry);
        return ZERO;
      }
      throw new OciError(409, 'BLOB_UNKNOWN', `index entry ${entry} (${prefix.toString('hex')}...) names no stored chunk`, { entry });
    });
  } catch (e) {
    if (e instanceof SnapyardError && e.code === 'INDEX_INVALID') throw new OciError(400, 'MANIFEST_INVALID', e.message);
    throw e;
  }
}

/** The stored raw length of every distinct chunk an index names (one lookup per RESOLVE_BATCH chunks). */
async function rawLengthsOf(svc: DeltaService, index: BlobIndex): Promise<Map<Digest, number | null>> {
  const out = new Map<Digest, number | null>();
  const raws = [...distinctChunks([index]).values()].map((c) => c.raw);
  for (let i = 0; i < raws.length; i += RESOLVE_BATCH) {
    const part = raws.slice(i, i + RESOLVE_BATCH);
    (await svc.store.chunks.rawLengths(part)).forEach((len, j) => out.set(digestFromRaw(part[j]!), len));
  }
  return out;
}

/**
 * The _missing body decompressed: one zstd frame, or with `?base=<blob of
 * <name>>` one whose dictionary is that blob's index in the compact layout
 * (8-byte prefixes), as a client holding that version sends it (an index
 * mostly the same as its base costs a few KB instead of ~130 KB).
 */
async function compactIndexBody(ctx: RequestContext, svc: DeltaService, name: string): Promise<Buffer> {
  const limit = svc.store.limits.maxCompactIndexBytes + 8;
  const base = ctx.url.searchParams.get('base');
  if (base === null) {
    const parts: Buffer[] = [];
    for await (const p of unzstd(ctx.incoming, limit, 'compact index')) parts.push(p);
    return Buffer.concat(parts);
  }
  const d = checkDigest(base);
  const index = (await ctx.store.blobs.stat(name, d)) ? await svc.indexOfDigest(d) : null;
  if (!index) throw new OciError(404, 'BLOB_UNKNOWN', `blob ${d} is not in ${name}`, { digest: d });
  // Compressed, the body is at most the route's limit; decompressed, at most the compact index limit.
  const payload = await readLimited(ctx.incoming, limit);
  try {
    return decompressWithPrefix(payload, index.encode(8), limit);
  } catch (e) {
    if (isSnapyardError(e, 'SIZE_INVALID')) throw new OciError(400, 'SIZE_INVALID', `compact index: ${e.message}`);
    throw e;
  }
}

/** POST _missing: opens a push session (429 past the open-session caps) holding the compact index. */
export async function missingChunks(ctx: RequestContext, svc: DeltaService, name: string): Promise<Response> {
  const ticket = svc.store.sessions.take(ctx.user); // LIMIT_EXCEEDED: 429 with Retry-After
  const lease = svc.store.pins.lease();
  let session: string | null = null;
  try {
    const body = await compactIndexBody(ctx, svc, name);
    if (body.byteLength < 8) throw new OciError(400, 'SIZE_INVALID', 'compact index too short');
    const width = body[0]!;
    if (width < 8 || width > 32) throw new OciError(400, 'UNSUPPORTED', `digest prefix width ${width} (8 to 32)`);
    const compact = body.subarray(8);
    // The session is recorded before its lookups touch what they find: a gc on any replica
    // that starts after a touch sees the session open, and keeps what it touched (gc.ts).
    session = await svc.openSession(name, compact, width, lease, ticket);
    const missing: number[] = [];
    const index = await expand(svc, compact, width, missing, lease);
    if (index.size > svc.store.limits.maxBlobBytes) {
      throw new OciError(413, 'SIZE_INVALID', `the index claims a blob of ${index.size} bytes; the limit is ${svc.store.limits.maxBlobBytes}`);
    }
    // The upload forms this store takes (a store that keeps stored forms as they are takes records too).
    const out = { session, entries: index.count, missing, uploadForms: await svc.uploadForms() };
    return respond(200, { 'Content-Type': 'application/json' }, JSON.stringify(out));
  } catch (e) {
    if (session !== null) await svc.closeSession(session).catch(() => {});
    lease.release();
    ticket.release();
    throw e;
  }
}

/**
 * POST _upload: chunks of the session, either one zstd stream of frames (each
 * hashed; at most maxBlobBytes decompressed) or, when the store keeps stored
 * forms as they are, pack records (storage/protocol/record-upload.ts: each
 * decoded and hashed on the store's workers, then kept without recompressing).
 */
export async function uploadChunks(ctx: RequestContext, svc: DeltaService, name: string): Promise<Response> {
  const session = ctx.url.searchParams.get('session') ?? '';
  const s = await svc.session(session, name);
  if (!s) throw new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `push session ${session.slice(0, 64)} is not open`);
  const writer = pinningWriter(svc.store.chunks.writer(), s.lease);
  const type = (header(ctx, 'content-type') ?? '').split(';')[0]!.trim();
  const records = type === RECORDS_UPLOAD_TYPE;
  if (records && !writer.addStored) {
    await writer.finish();
    throw new OciError(415, 'UNSUPPORTED', `this registry's store does not take ${RECORDS_UPLOAD_TYPE}: send the zstd stream`);
  }
  let chunks = 0;
  let bytes = 0;
  let failed = true;
  try {
    if (type === FRAMES_UPLOAD_TYPE) {
      ({ chunks, bytes } = await uploadFrames(ctx.incoming, svc, writer, svc.store.limits.maxBlobBytes));
    } else if (records) {
      for await (const r of readUploadRecords(ctx.incoming, svc.store.limits.maxBlobBytes)) {
        await writer.addStored!(digestFromRaw(r.digest), r.stored, r.rawLength);
        chunks++;
        bytes += r.rawLength;
      }
    } else {
      for await (const f of readUploadFrames(unzstd(ctx.incoming, svc.store.limits.maxBlobBytes, 'chunk upload'))) {
        const r = await writer.add(f.raw);
        const claimed = digestFromRaw(f.digest);
        if (r.digest !== claimed) throw new OciError(400, 'DIGEST_INVALID', `uploaded chunk hashes to ${r.digest}, not ${claimed}`, { expected: claimed, actual: r.digest });
        chunks++;
        bytes += f.raw.byteLength;
      }
    }
    failed = false;
  } catch (e) {
    throw uploadError(e);
  } finally {
    // In-flight writes finish before we answer, even on failure (nothing races the next request).
    if (failed) await writer.finish().catch(() => {});
  }
  let result: { newChunks: number };
  try {
    result = await writer.finish();
  } catch (e) {
    throw uploadError(e);
  }
  await svc.store.chunks.flush();
  return respond(200, { 'Content-Type': 'application/json' }, JSON.stringify({ chunks, bytes, newChunks: result.newChunks }));
}

/** An upload's failure as the client should hear it: malformed or oversized input, or a chunk that is not what it is named. */
function uploadError(e: unknown): unknown {
  if (isSnapyardError(e, 'SIZE_INVALID')) return new OciError(400, 'SIZE_INVALID', e.message);
  if (isSnapyardError(e, 'LIMIT_EXCEEDED')) return new OciError(413, 'SIZE_INVALID', e.message);
  if (isSnapyardError(e, 'CHUNK_CORRUPT')) return new OciError(400, 'DIGEST_INVALID', `uploaded ${e.message}`);
  return framesError(e);
}


/**
 * POST _commit: the claimed index is checked against the store and the limits
 * (storage/blobs/commit-check.ts) before the blob is rebuilt from its chunks and
 * hashed; only a blob that hashes to the claimed digest is committed.
 */
export async function commitPush(ctx: RequestContext, svc: DeltaService, name: string): Promise<Response> {
  const req = await jsonBody(ctx.incoming, commitRequest, 64 * 1024);
  const s = await svc.session(req.session, name, true);
  if (!s) throw new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `push session ${req.session} is not open`);
  const index = await expand(svc, s.compact!, s.width, null);
  if (index.blobDigest !== req.digest) throw new OciError(400, 'DIGEST_INVALID', `the index describes ${index.blobDigest}, not ${req.digest}`);
  try {
    const lengths = await rawLengthsOf(svc, index);
    checkClaimedIndex(index, (d) => lengths.get(d) ?? null, svc.store.limits);
  } catch (e) {
    await svc.closeSession(s.id);
    if (isSnapyardError(e, 'INDEX_INVALID')) throw new OciError(400, 'MANIFEST_INVALID', e.message);
    if (isSnapyardError(e, 'CHUNK_MISSING')) throw new OciError(409, 'BLOB_UNKNOWN', e.message);
    throw e;
  }
  // Rebuild the blob from its chunks and hash it: a wrong index never becomes a blob. Hashed off the
  // event loop where the store can (sha256 of every pushed byte was 8% of it under bench/load.ts).
  const d = svc.store.chunks.digester?.() ?? localDigester();
  for await (const piece of readBlob(svc.store.chunks, index, 0, index.size, { budget: svc.store.blobs.readBudget })) {
    const w = d.update(piece);
    if (w) await w;
    svc.store.chunks.release?.(piece);
  }
  const actual = await d.digest();
  if (actual !== index.blobDigest || d.size !== index.size) {
    await svc.closeSession(s.id);
    throw new OciError(400, 'DIGEST_INVALID', `the chunks rebuild ${actual}, not ${index.blobDigest}`, { expected: index.blobDigest, actual });
  }
  const stored = await svc.store.chunks.add(index.encode());
  s.lease.pin(stored.digest);
  await svc.store.chunks.flush();
  try {
    // Checks, under the commit lock, that every chunk is still there, then makes the blob visible.
    await svc.store.blobs.commit(name, {
      digest: index.blobDigest, size: index.size, index, indexDigest: stored.digest,
      chunks: index.count, newChunks: 0, newStoredBytes: 0, layout: index.kind === 1 ? 'qcow2' : 'bytes',
    });
  } finally {
    await svc.closeSession(s.id);
  }
  const out = { digest: index.blobDigest, size: index.size, indexDigest: stored.digest, layout: index.kind === 1 ? 'qcow2' : 'bytes' };
  return respond(201, { 'Content-Type': 'application/json', 'Docker-Content-Digest': index.blobDigest }, JSON.stringify(out));
}

export async function blobManifests(ctx: RequestContext, name: string, digestStr: string): Promise<Response> {
  const digest: Digest = checkDigest(digestStr);
  const meta = ctx.store.meta;
  const list = await Promise.all((await meta.manifestsReferencing(name, digest)).map(async (m) => ({
    digest: m.digest, mediaType: m.mediaType, size: m.size, artifactType: m.artifactType, tags: await meta.tagsOf(name, m.digest),
  })));
  return respond(200, { 'Content-Type': 'application/json' }, JSON.stringify({ blob: digest, manifests: list }));
}

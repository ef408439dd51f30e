/**
 * `snapyard push REF FILE`: chunk the file locally (guest view for qcow2),
 * tell the server the chunks by 8-byte digest prefixes (a compact index),
 * upload only the chunks it lacks (one zstd stream, or for a large upload
 * their stored forms compressed on two workers), let it rebuild and
 * verify the blob, then publish an OCI manifest so plain OCI clients pull the
 * exact file. An overlay records its base: an OCI `subject` pointing at the
 * manifest that holds the backing file (when the registry has it) and
 * annotations naming it.
 */
import { ANN_BACKING_FILE, ANN_BASE_BLOB } from '../storage/meta/manifest-facts.js';
import { blobManifestsAnswer, commitAnswer, missingAnswer, parseAnswer } from '../storage/protocol/api.js';
import { existsSync } from 'node:fs';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { Readable } from 'node:stream';
import { CompressStream, compress } from 'zstd-napi';
import { sha256, type Digest } from '../storage/digest.js';
import { SnapyardError } from '../storage/errors.js';
import { Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import { uploadFrameHeader } from '../storage/protocol/wire.js';
import type { ClientCache } from './cache.js';
import { hashFile, indexFile, type FileIndex } from './file-index.js';
import type { Ref } from './ref.js';
import { RegistryError, type Registry } from './registry.js';
import { LocalSources } from './sources.js';
import { uploadRecords } from './push-records.js';
import { uploadDeltaFrames } from './push-delta.js';
import { compressWithPrefix, FRAMES_UPLOAD_FORM } from '../storage/protocol/wire.js';
import type { z } from 'zod';
import { RECORDS_UPLOAD_FORM } from '../storage/protocol/record-upload.js';

export const MT_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const MT_EMPTY = 'application/vnd.oci.empty.v1+json';
export const ARTIFACT_QCOW2 = 'application/vnd.snapyard.qcow2';
export const MT_QCOW2_LAYER = 'application/vnd.snapyard.qcow2.v1';
export const MT_RAW_LAYER = 'application/octet-stream';
export { ANN_BACKING_FILE, ANN_BASE_BLOB };

export interface PushOptions {
  registry: Registry;
  cache: ClientCache | null;
  /** zstd level of the upload stream (default uploadLevel()); given, the upload is always the stream. */
  level?: number;
  /** Uploads of at least this many new bytes go as records where the registry takes them (default RECORDS_MIN_BYTES). */
  recordsMinBytes?: number;
  /**
   * Previous versions on this machine (files): those the registry holds as
   * blobs of the repository make smaller uploads the dictionaries of its new
   * chunks (push-delta.ts).
   */
  seeds?: string[];
  onPhase?: (phase: string) => void;
}

export type UploadForm = 'records' | 'frames' | 'zstd-stream' | 'none';

export interface PushResult {
  ref: string;
  manifestDigest: string;
  blobDigest: Digest;
  size: number;
  layout: 'qcow2' | 'bytes';
  chunks: number;
  newChunks: number;
  newRawBytes: number;
  uploadBytes: number;
  /** New chunks sent compressed against seed chunks (form 'frames'). */
  dictChunks: number;
  /** How the new chunks went: 'records' (stored forms, push-records.ts), 'frames' (against seeds, push-delta.ts), 'zstd-stream', or 'none'. */
  uploadForm: UploadForm;
  base: { blob: Digest; manifest: string | null; backingFile: string } | null;
  seconds: number;
}

export async function push(ref: Ref, file: string, opts: PushOptions): Promise<PushResult> {
  if (!ref.tag) throw new SnapyardError('INVALID_ARGUMENT', 'push needs a tag (repo:tag)');
  const t0 = performance.now();
  const reg = opts.registry;
  opts.onPhase?.('chunking');
  const fi = await indexFile(file, opts.cache);
  let uploaded = await uploadBlob(reg, ref.repo, file, fi, opts);
  opts.onPhase?.('publishing');
  const base = await lineage(reg, ref.repo, file, fi.index, opts.cache);
  const isQcow2 = fi.index instanceof Qcow2Index;
  const config = Buffer.from('{}');
  await reg.putSmallBlob(ref.repo, sha256(config), config);
  const annotations: Record<string, string> = { 'org.opencontainers.image.created': new Date().toISOString() };
  if (base) {
    annotations[ANN_BASE_BLOB] = base.blob;
    annotations[ANN_BACKING_FILE] = base.backingFile;
  }
  const manifest = {
    schemaVersion: 2,
    mediaType: MT_MANIFEST,
    artifactType: isQcow2 ? ARTIFACT_QCOW2 : 'application/vnd.snapyard.disk',
    config: { mediaType: MT_EMPTY, digest: sha256(config), size: config.byteLength, data: config.toString('base64') },
    layers: [{ mediaType: isQcow2 ? MT_QCOW2_LAYER : MT_RAW_LAYER, digest: fi.digest, size: fi.index.size, annotations: { 'org.opencontainers.image.title': basename(file) } }],
    ...(base?.manifest ? { subject: base.manifestDescriptor } : {}),
    annotations,
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  let manifestDigest: string;
  try {
    manifestDigest = await reg.putManifest(ref.repo, ref.tag, bytes, MT_MANIFEST, 'push');
  } catch (e) {
    // A gc with a short grace may collect a committed blob before its manifest arrives: push it again, once.
    if (!(e instanceof RegistryError) || e.ociCode !== 'MANIFEST_BLOB_UNKNOWN') throw e;
    const again = await uploadBlob(reg, ref.repo, file, fi, opts);
    uploaded = sum(uploaded, again);
    await reg.putSmallBlob(ref.repo, sha256(config), config);
    manifestDigest = await reg.putManifest(ref.repo, ref.tag, bytes, MT_MANIFEST, 'push');
  }
  return {
    ref: `${ref.repo}:${ref.tag}`,
    manifestDigest: manifestDigest || sha256(bytes),
    blobDigest: fi.digest,
    size: fi.index.size,
    layout: isQcow2 ? 'qcow2' : 'bytes',
    chunks: fi.index.count,
    newChunks: uploaded.chunks,
    newRawBytes: uploaded.raw,
    uploadBytes: uploaded.wire,
    uploadForm: uploaded.form,
    dictChunks: uploaded.dict,
    base: base ? { blob: base.blob, manifest: base.manifest, backingFile: base.backingFile } : null,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * Makes the registry hold the file as a blob: the compact index says what it
 * lacks, only that is uploaded, and the commit rebuilds and checks the blob.
 */
interface Uploaded {
  chunks: number;
  raw: number;
  wire: number;
  form: UploadForm;
  /** Chunks sent as dictionary frames. */
  dict: number;
}

/** Two uploads of one push as one (the later form, unless it sent nothing). */
function sum(a: Uploaded, b: Uploaded): Uploaded {
  return { chunks: a.chunks + b.chunks, raw: a.raw + b.raw, wire: a.wire + b.wire, form: b.form === 'none' ? a.form : b.form, dict: a.dict + b.dict };
}

async function uploadBlob(reg: Registry, repo: string, file: string, fi: FileIndex, opts: PushOptions): Promise<Uploaded> {
  let width = 8;
  let uploaded: Uploaded = { chunks: 0, raw: 0, wire: 0, form: 'none', dict: 0 };
  let committed: { digest: string; size: number } | null = null;
  // Seed files the registry holds: the compact index goes as a difference from the first one's, and new chunks against them.
  const seeds = opts.level === undefined && opts.seeds?.length ? await heldSeeds(reg, repo, opts.seeds, opts.cache) : [];
  for (let attempt = 0; attempt < 2 && !committed; attempt++) {
    opts.onPhase?.('negotiating');
    const { miss, sent } = await negotiate(reg, repo, fi.index, width, seeds[0]);
    opts.onPhase?.('uploading');
    const forms = miss.uploadForms ?? [];
    const plan: UploadPlan = {
      level: opts.level,
      records: (raw) => opts.level === undefined && raw >= (opts.recordsMinBytes ?? RECORDS_MIN_BYTES) && forms.includes(RECORDS_UPLOAD_FORM),
      seeds: forms.includes(FRAMES_UPLOAD_FORM) ? seeds : [],
    };
    const u = await uploadMissing(reg, repo, miss.session, file, fi.index, miss.missing, plan).catch(async (e: unknown) => {
      // New chunks are read from the file without being hashed again (the registry hashes each): a file changed
      // since it was indexed fails the upload however the registry shows it (refusing a record, or closing the
      // connection on it). Hashed again only then, to say so.
      if ((await hashFile(file).catch(() => null)) !== fi.digest) {
        throw new SnapyardError('CHUNK_MISSING', `${file} no longer holds what it was indexed with (did the file change?); the upload failed: ${(e as Error).message}`);
      }
      throw e;
    });
    uploaded = sum(uploaded, { ...u, wire: u.wire + sent });
    try {
      committed = await reg.call('POST', `/snapyard/v1/${repo}/_commit`, commitAnswer, { session: miss.session, digest: fi.digest });
    } catch (e) {
      // A digest prefix that matched another chunk: say every digest in full.
      if (width === 32 || !(e instanceof RegistryError) || (e.status !== 409 && e.ociCode !== 'DIGEST_INVALID')) throw e;
      width = 32;
    }
  }
  return uploaded;
}

/**
 * From this many new bytes on, a registry that takes them gets the chunks as
 * records compressed on two workers (push-records.ts) instead of one zstd
 * stream compressed on this thread: on the bench corpus base image (880 MB new)
 * the level-3 stream was 5.8-6.4 s of the client's CPU, single-threaded.
 */
export const RECORDS_MIN_BYTES = 64 * 1024 * 1024;

/** zstd level for an upload of `raw` new bytes: the smaller the update, the harder it is worth squeezing. */
export function uploadLevel(raw: number): number {
  // Measured on games-v1 -> games-v2 (10.4 MB of new chunks): level 3 3.33 MB in 0.10 s, 9 3.06 MB in 0.23 s,
  // 17 2.87 MB in 2.2 s, 19 2.69 MB in 3.6 s (and ~100 MB more memory).
  return raw <= 16 * 1024 * 1024 ? 17 : raw <= 256 * 1024 * 1024 ? 9 : 3;
}

/** Streams the chunks the server lacks as one zstd stream of upload frames. */
/** How uploadMissing sends the new chunks. */
interface UploadPlan {
  /** The stream's zstd level, when the user chose it (the stream it is, then). */
  level: number | undefined;
  /** Whether `raw` new bytes go as records. */
  records: (raw: number) => boolean;
  /** Seed files whose blobs the registry holds in the repository (frames against them). */
  seeds: Array<{ path: string; index: PushIndex; digest: Digest }>;
}

/**
 * POST _missing: the compact index (8-byte digest prefixes at first), zstd;
 * with a held seed, compressed with the seed's compact index as a dictionary
 * (`?base=`), plain again if the registry does not take that (an older one).
 * Answers the registry's answer and the bytes sent.
 */
async function negotiate(reg: Registry, repo: string, index: PushIndex, width: number, seed: UploadPlan['seeds'][number] | undefined): Promise<{ miss: z.infer<typeof missingAnswer>; sent: number }> {
  const head = Buffer.alloc(8);
  head[0] = width;
  const compact = Buffer.concat([head, index.encode(width)]);
  const headers = { 'content-type': 'application/vnd.snapyard.compact-index.v1+zstd' };
  if (seed) {
    const body = compressWithPrefix(compact, seed.index.encode(8), 3);
    const res = await reg.request('POST', `/snapyard/v1/${repo}/_missing?base=${seed.digest}`, { body, headers, ok: (st) => st === 200 || st === 400 || st === 404 });
    if (res.statusCode === 200) return { miss: parseAnswer(missingAnswer, await res.body.json(), '_missing'), sent: body.byteLength };
    await res.body.dump();
  }
  const body = compress(compact, { compressionLevel: 3 });
  const res = await reg.request('POST', `/snapyard/v1/${repo}/_missing`, { body, headers });
  return { miss: parseAnswer(missingAnswer, await res.body.json(), '_missing'), sent: body.byteLength };
}

/** The seed files the registry holds as blobs of `repo`, indexed (from the cache when known). */
async function heldSeeds(reg: Registry, repo: string, paths: string[], cache: ClientCache | null): Promise<UploadPlan['seeds']> {
  const out: UploadPlan['seeds'] = [];
  for (const path of paths) {
    const fi = await indexFile(path, cache);
    const res = await reg.request('HEAD', `/v2/${repo}/blobs/${fi.digest}`, { ok: (st) => st === 200 || st === 404 });
    await res.body.dump();
    if (res.statusCode === 200) out.push({ path, index: fi.index, digest: fi.digest });
  }
  return out;
}

async function uploadMissing(reg: Registry, repo: string, session: string, file: string, index: PushIndex, missing: number[], plan: UploadPlan): Promise<Uploaded> {
  const level = plan.level;
  // Entries are numbered across the index's lists in order (data chunks, then residue chunks).
  const lists = index.lists();
  const seen = new Set<string>();
  const todo: Array<{ hex: string; length: number }> = [];
  const firstLen = lists[0]!.count;
  for (const e of missing) {
    const [list, i] = e < firstLen ? [lists[0]!, e] : [lists[1]!, e - firstLen];
    if (!list || i >= list.count) throw new SnapyardError('INTERNAL', `server named entry ${e}, the index has ${index.count}`);
    const hex = list.rawDigestAt(i).toString('hex');
    if (seen.has(hex)) continue;
    seen.add(hex);
    todo.push({ hex, length: list.lengths[i]! });
  }
  const raw = todo.reduce((n, t) => n + t.length, 0);
  if (todo.length === 0) return { chunks: 0, raw: 0, wire: 0, form: 'none', dict: 0 };
  if (!plan.records(raw) && plan.seeds.length > 0) {
    const seeded = await LocalSources.open(null, [{ path: file, index }, ...plan.seeds.map((s) => ({ path: s.path, index: s.index }))]);
    try {
      const r = await uploadDeltaFrames(reg, repo, session, file, seeded, todo, plan.seeds.map((s) => s.digest));
      return { chunks: todo.length, raw, wire: r.wire, form: 'frames', dict: r.dictFrames };
    } finally {
      await seeded.close();
    }
  }
  const sources = await LocalSources.open(null, { path: file, index });
  if (plan.records(raw)) {
    try {
      return { chunks: todo.length, raw, wire: await uploadRecords(reg, repo, session, file, sources, todo), form: 'records', dict: 0 };
    } finally {
      await sources.close();
    }
  }
  // An 8 MiB window at most (zstd's own for levels 17+): memory follows it.
  const z = new CompressStream({ compressionLevel: level ?? uploadLevel(raw), windowLog: Math.min(23, Math.max(20, Math.ceil(Math.log2(raw + 1)))) });
  let wire = 0;
  const feed = (async () => {
    try {
      for (const t of todo) {
        const b = await sources.get(t.hex);
        if (!b) throw new SnapyardError('CHUNK_MISSING', `chunk sha256:${t.hex} of ${file} could not be read back (did the file change?)`);
        if (!z.write(Buffer.concat([uploadFrameHeader(Buffer.from(t.hex, 'hex'), b.byteLength), b]))) await new Promise((r) => z.once('drain', r));
      }
      z.end();
    } catch (e) {
      z.destroy(e as Error);
    } finally {
      await sources.close();
    }
  })();
  async function* counted(): AsyncGenerator<Uint8Array> {
    for await (const piece of z as AsyncIterable<Buffer>) {
      wire += piece.byteLength;
      yield piece;
    }
  }
  const res = await reg.request('POST', `/snapyard/v1/${repo}/_upload?session=${encodeURIComponent(session)}`, {
    body: Readable.from(counted()),
    headers: { 'content-type': 'application/vnd.snapyard.chunk-upload.v1+zstd' },
  });
  await res.body.dump();
  await feed;
  return { chunks: todo.length, raw, wire, form: 'zstd-stream', dict: 0 };
}

type PushIndex = Awaited<ReturnType<typeof indexFile>>['index'];

/** The base of an overlay: its backing file's digest, and the manifest in `repo` that holds it. */
async function lineage(reg: Registry, repo: string, file: string, index: PushIndex, cache: ClientCache | null) {
  if (!(index instanceof Qcow2Index) || !index.layout.hasBacking) return null;
  const img = Qcow2Image.open(file);
  const backingFile = img.backingFile;
  img.close();
  if (!backingFile) return null;
  const path = isAbsolute(backingFile) ? backingFile : join(dirname(file), backingFile);
  if (!existsSync(path)) return null;
  const blob = cache?.fileDigest(path) ?? (await hashFile(path));
  const r = await reg.call('GET', `/snapyard/v1/${repo}/_blobs/${blob}/manifests`, blobManifestsAnswer);
  const m = r.manifests[0];
  return {
    blob,
    backingFile,
    manifest: m?.digest ?? null,
    manifestDescriptor: m ? { mediaType: m.mediaType, digest: m.digest, size: m.size, ...(m.artifactType ? { artifactType: m.artifactType } : {}) } : undefined,
  };
}

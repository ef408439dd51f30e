/**
 * verify: every committed chunk is read, decompressed and re-hashed on the
 * chunk worker threads (batches of ~4 MiB in pack order, two per worker in
 * flight), then every blob's index must decode and list only chunks that are
 * held and sound. Problems are reported with the snapshots they affect.
 *
 * repair: corrupt chunks are moved aside (LocalChunkStore.quarantine: the
 * record copied to store/quarantine/, its index row deleted), and blobs whose
 * index does not resolve are unlinked from their repositories (their manifests
 * stay), so every client uploads them again on its next push (an OCI client's
 * HEAD no longer finds them; `snapyard push` is told the chunks are missing)
 * and the store heals. Runs under the commit lock for the deletions.
 */
import { decodeBlobIndex } from '../blobs/blob-index.js';
import type { BlobStore } from '../blobs/blob-store.js';
import type { AsyncLock } from '../coord/commit-lock.js';
import { digestFromRaw, type Digest } from '../digest.js';
import type { MaintainedChunkStore } from '../chunks/maintained-chunk-store.js';
import type { MetadataStore } from '../meta/metadata-store.js';

export interface VerifyStore {
  meta: MetadataStore;
  chunks: MaintainedChunkStore;
  blobs: BlobStore;
  lock: AsyncLock;
}

export interface VerifyProblem {
  /** blob-missing / manifest-missing: a manifest references a blob its repository does not hold, or a child manifest that is gone. */
  kind: 'chunk-corrupt' | 'chunk-missing' | 'index-invalid' | 'blob-missing' | 'manifest-missing';
  /** The chunk (or index chunk, or missing blob / manifest) at fault. */
  digest: Digest;
  /** The blob whose index names it (for chunk-corrupt: every blob that uses it). */
  blobs: Digest[];
  message: string;
}

export interface VerifyReport {
  ok: boolean;
  chunks: number;
  /** Stored bytes read (record payloads). */
  storedBytes: number;
  rawBytes: number;
  blobs: number;
  problems: VerifyProblem[];
  /** Snapshots (repo:tag, repo@digest) that use a broken blob. */
  snapshots: string[];
  repaired: { quarantined: number; blobsUnlinked: number } | null;
  seconds: number;
}


/** Chunks looked up per call of the chunk store. */
const LOOKUP_BATCH = 4096;

export async function verifyStore(store: VerifyStore, opts: { repair?: boolean; lanes?: number } = {}): Promise<VerifyReport> {
  const t0 = performance.now();
  await store.chunks.flushIfRoom(); // verify reads what is committed: it works on a full disk
  const { corrupt, storedBytes, chunks: chunkCount } = await store.chunks.verifyChunks({ lanes: opts.lanes ?? 4 });
  // Every blob's index resolves to held, sound chunks.
  const problems: VerifyProblem[] = [];
  const byChunk = new Map<Digest, VerifyProblem>();
  const brokenBlobs = new Set<Digest>();
  const blobs = await store.meta.allBlobs();
  let rawBytes = 0;
  for (const blob of blobs) {
    const problem = (kind: VerifyProblem['kind'], digest: Digest, message: string) => {
      brokenBlobs.add(blob.digest);
      const p = byChunk.get(digest);
      if (p) {
        if (!p.blobs.includes(blob.digest)) p.blobs.push(blob.digest);
        return;
      }
      const np: VerifyProblem = { kind, digest, blobs: [blob.digest], message };
      byChunk.set(digest, np);
      problems.push(np);
    };
    if (corrupt.has(blob.indexDigest)) {
      problem('index-invalid', blob.indexDigest, corrupt.get(blob.indexDigest)!);
      continue;
    }
    let buf: Buffer;
    try {
      buf = await store.chunks.get(blob.indexDigest);
    } catch (e) {
      problem((e as { code?: string }).code === 'CHUNK_MISSING' ? 'chunk-missing' : 'index-invalid', blob.indexDigest, (e as Error).message);
      continue;
    }
    try {
      const index = decodeBlobIndex(buf);
      if (index.blobDigest !== blob.digest || index.size !== blob.size) throw new Error(`index ${blob.indexDigest} does not describe blob ${blob.digest}`);
      rawBytes += index.size;
      for (const list of index.lists()) {
        // Held or not: one lookup per batch of entries.
        for (let from = 0; from < list.count; from += LOOKUP_BATCH) {
          const raws: Uint8Array[] = [];
          for (let i = from; i < Math.min(list.count, from + LOOKUP_BATCH); i++) raws.push(list.rawDigestAt(i));
          const lens = await store.chunks.rawLengths(raws);
          raws.forEach((raw, j) => {
            const d = digestFromRaw(raw);
            if (corrupt.has(d)) problem('chunk-corrupt', d, corrupt.get(d)!);
            else if (lens[j] === null) problem('chunk-missing', d, `chunk ${d} is missing`);
          });
        }
      }
    } catch (e) {
      problem('index-invalid', blob.indexDigest, (e as Error).message);
    }
  }
  // Corrupt chunks no blob uses are problems too (nothing to name).
  for (const [d, message] of corrupt) if (!byChunk.has(d)) problems.push({ kind: 'chunk-corrupt', digest: d, blobs: [], message });
  const snapshots = new Set<string>();
  for (const b of brokenBlobs) for (const s of await store.meta.snapshotsUsing(b)) snapshots.add(s);
  // Manifests that cannot be pulled whole: a blob or child manifest they reference is not there.
  for (const r of await store.meta.danglingRefs()) {
    const what = r.kind === 'blob' ? 'blob' : 'manifest';
    problems.push({ kind: `${what}-missing`, digest: r.ref, blobs: [], message: `${r.repo}@${r.manifest} references ${what} ${r.ref}, which ${r.repo} does not hold` });
    for (const s of await store.meta.snapshotsUsing(r.manifest)) snapshots.add(s);
    const tags = await store.meta.tagsOf(r.repo, r.manifest);
    if (tags.length === 0) snapshots.add(`${r.repo}@${r.manifest}`);
    for (const t of tags) snapshots.add(`${r.repo}:${t}`);
  }
  let repaired: VerifyReport['repaired'] = null;
  if (opts.repair) {
    repaired = await store.lock.run(async () => {
      let quarantined = 0;
      let blobsUnlinked = 0;
      for (const d of corrupt.keys()) if (await store.chunks.quarantine(d)) quarantined++;
      for (const b of brokenBlobs) {
        if ((await store.meta.unlinkEverywhere(b)).length > 0) blobsUnlinked++;
        store.blobs.forget(b);
      }
      return { quarantined, blobsUnlinked };
    });
  }
  return {
    ok: problems.length === 0,
    chunks: chunkCount,
    storedBytes,
    rawBytes,
    blobs: blobs.length,
    problems,
    snapshots: [...snapshots].sort(),
    repaired,
    seconds: (performance.now() - t0) / 1000,
  };
}

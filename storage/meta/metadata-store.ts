/**
 * Registry metadata behind one async interface: repositories, blobs and
 * where they are linked, manifests and what they reference, tags and their
 * history, upload records, digest aliases, and what gc and verify ask.
 * Implementations: SQLite (sqlite-metadata-store.ts, the embedded default);
 * PostgreSQL for several replicas.
 *
 * No transaction handle leaks out: each method is one atomic step, and the
 * lifecycle rules (lifecycle.ts: tag moves, rollback, rm, prune) run inside
 * the store's own transaction through `LifecycleTx`.
 */
import type { AnyDigest, Digest, Sha512Digest } from '../digest.js';
import type { PruneResult, Rollback, TagMove } from './lifecycle.js';
import type {
  BlobRecord,
  ManifestRecord,
  ManifestRef,
  ManifestSummary,
  NewManifest,
  RepoSummary,
  TagEvent,
  TagRow,
  UploadRecord,
} from './metadata-types.js';

export type * from './metadata-types.js';

/** What the lifecycle rules read and write, inside one transaction of the store. */
export interface LifecycleTx {
  resolveTag(repo: string, tag: string): Promise<Digest | null>;
  manifestExists(repo: string, digest: Digest): Promise<boolean>;
  setTag(repo: string, tag: string, digest: Digest | null, source: string): Promise<void>;
  tagHistory(repo: string, tag: string): Promise<TagEvent[]>;
  tagRows(repo: string): Promise<TagRow[]>;
  tagsOf(repo: string, digest: Digest): Promise<string[]>;
  listManifests(repo: string): Promise<ManifestSummary[]>;
  deleteManifest(repo: string, digest: Digest, source: string): Promise<boolean>;
}

export interface MetadataStore {
  /** "sqlite:PATH", "postgres://HOST/DB": for logs. */
  readonly location: string;
  now(): number;
  /** Readiness: answers and takes a write lock; throws otherwise. */
  probe(): Promise<void>;
  close(): Promise<void>;

  // ---- repositories ----
  repoExists(repo: string): Promise<boolean>;
  listRepos(): Promise<string[]>;
  repoSummaries(): Promise<RepoSummary[]>;

  // ---- blobs ----
  /** Blobs stored and the sum of their sizes. */
  blobTotals(): Promise<{ blobs: number; bytes: number }>;
  getBlob(digest: Digest): Promise<BlobRecord | null>;
  /** Records a blob (once) and links it into `repo`. */
  commitBlob(repo: string, blob: BlobRecord): Promise<void>;
  /** Links a stored blob into `repo`; false when the blob is not stored. */
  linkBlob(repo: string, digest: Digest): Promise<boolean>;
  isLinked(repo: string, digest: Digest): Promise<boolean>;
  unlinkBlob(repo: string, digest: Digest): Promise<boolean>;
  /** Unlinks unless a manifest of `repo` references it (then: who does). */
  unlinkBlobIfUnused(repo: string, digest: Digest): Promise<{ unlinked: boolean; usedBy: Digest[] }>;
  /** Unlinks a blob from every repository (repair); returns the repositories. */
  unlinkEverywhere(digest: Digest): Promise<string[]>;
  allBlobs(): Promise<BlobRecord[]>;
  /** `repo:tag` / `repo@digest` of the snapshots using a blob, directly or through an index. */
  snapshotsUsing(blob: Digest): Promise<string[]>;
  danglingRefs(): Promise<Array<{ repo: string; manifest: Digest; ref: Digest; kind: 'blob' | 'manifest' }>>;

  // ---- manifests ----
  getManifest(repo: string, digest: Digest): Promise<ManifestRecord | null>;
  manifestExists(repo: string, digest: Digest): Promise<boolean>;
  /** Stores a manifest (and moves its tag) unless a required reference is missing (then nothing is stored). */
  commitManifest(m: NewManifest, source: string): Promise<{ missing: ManifestRef[] }>;
  deleteManifest(repo: string, digest: Digest, source: string): Promise<boolean>;
  listManifests(repo: string): Promise<ManifestSummary[]>;
  manifestsReferencing(repo: string, digest: Digest): Promise<ManifestSummary[]>;
  referrers(repo: string, subject: Digest): Promise<Array<ManifestSummary & { annotations: Record<string, string> | null }>>;

  // ---- tags ----
  resolveTag(repo: string, tag: string): Promise<Digest | null>;
  /** Points a tag at a manifest of `repo` (or removes it with null), recording the move. */
  setTag(repo: string, tag: string, digest: Digest | null, source: string): Promise<void>;
  listTags(repo: string, n: number, last: string): Promise<string[]>;
  tagsOf(repo: string, digest: Digest): Promise<string[]>;
  /** Every move of a tag, newest first. */
  tagHistory(repo: string, tag: string): Promise<TagEvent[]>;
  tagRows(repo: string): Promise<TagRow[]>;

  // ---- lifecycle (the rules: lifecycle.ts) ----
  moveTag(repo: string, tag: string, target: { digest: string } | { tag: string }): Promise<TagMove>;
  removeTag(repo: string, tag: string): Promise<Digest>;
  rollbackTag(repo: string, tag: string, how: { steps?: number; to?: string }): Promise<Rollback>;
  removeManifest(repo: string, digest: string): Promise<{ repository: string; digest: Digest; removedTags: string[] }>;
  prune(repo: string, opts: { keep: number; match?: string | null; dryRun?: boolean }): Promise<PruneResult>;

  // ---- upload records ----
  createUpload(id: string, repo: string): Promise<void>;
  getUpload(id: string): Promise<UploadRecord | null>;
  setUploadSize(id: string, size: number): Promise<void>;
  deleteUpload(id: string): Promise<boolean>;
  clearUploads(): Promise<void>;

  // ---- gc ----
  /** Blobs referenced by a manifest, or linked at or after `cutoffMs`. */
  gcLiveBlobs(cutoffMs: number): Promise<Set<Digest>>;
  /** Unlinks stale unreferenced blob links, deletes the records of blobs used nowhere; one transaction. */
  gcBlobs(cutoffMs: number, dryRun: boolean): Promise<{ unlinked: number; deleted: Digest[] }>;

  // ---- digest aliases (sha512 names of sha256-stored content) ----
  /** The sha256 a digest names: itself for a sha256, the recorded one for an alias, null when unknown. */
  resolveAlias(d: AnyDigest): Promise<Digest | null>;
  /** Records that `alias` names the content stored as `canonical` (before that content is committed). */
  addAlias(alias: Sha512Digest, canonical: Digest): Promise<void>;
}

/**
 * The embedded metadata store: SQLite in the data directory (metadata.ts
 * holds the schema and statements, synchronous). Each call is one statement
 * or one transaction; a lifecycle operation (lifecycle.ts) runs in one
 * IMMEDIATE transaction, and while it is open every other call waits for it,
 * since anything run on the connection meanwhile would be part of it.
 */
import type { AnyDigest, Digest, Sha512Digest } from '../digest.js';
import * as lifecycle from './lifecycle.js';
import { Metadata } from './metadata.js';
import type { LifecycleTx, MetadataStore } from './metadata-store.js';
import type { BlobRecord, NewManifest } from './metadata-types.js';

export class SqliteMetadataStore implements MetadataStore {
  readonly location: string;
  private readonly db: Metadata;
  /** Settles when the open lifecycle transaction ends (null: none open). */
  private open: Promise<void> | null = null;
  private readonly txView: LifecycleTx;

  constructor(path: string, opts: { now?: () => number; onFull?: () => boolean } = {}) {
    this.location = `sqlite:${path}`;
    this.db = new Metadata(path, opts);
    const db = this.db;
    this.txView = {
      resolveTag: async (repo, tag) => db.resolveTag(repo, tag),
      manifestExists: async (repo, digest) => db.manifestExists(repo, digest),
      setTag: async (repo, tag, digest, source) => db.setTag(repo, tag, digest, source),
      tagHistory: async (repo, tag) => db.tagHistory(repo, tag),
      tagRows: async (repo) => db.tagRows(repo),
      tagsOf: async (repo, digest) => db.tagsOf(repo, digest),
      listManifests: async (repo) => db.listManifests(repo),
      deleteManifest: async (repo, digest, source) => db.deleteManifest(repo, digest, source),
    };
  }

  /** Runs a synchronous call once no lifecycle transaction is open. */
  private async run<T>(f: (db: Metadata) => T): Promise<T> {
    while (this.open) await this.open;
    return f(this.db);
  }

  private async transaction<T>(fn: (tx: LifecycleTx) => Promise<T>): Promise<T> {
    while (this.open) await this.open;
    let settle!: () => void;
    this.open = new Promise<void>((r) => (settle = r));
    try {
      return await this.db.relievingAsyncTx(() => fn(this.txView));
    } finally {
      this.open = null;
      settle();
    }
  }

  now(): number {
    return this.db.now();
  }

  probe(): Promise<void> {
    return this.run((db) => db.probe());
  }

  async close(): Promise<void> {
    while (this.open) await this.open;
    this.db.close();
  }

  repoExists(repo: string) {
    return this.run((db) => db.repoExists(repo));
  }
  listRepos() {
    return this.run((db) => db.listRepos());
  }
  repoSummaries() {
    return this.run((db) => db.repoSummaries());
  }

  blobTotals() {
    return this.run((db) => db.blobTotals());
  }
  getBlob(digest: Digest) {
    return this.run((db) => db.getBlob(digest));
  }
  commitBlob(repo: string, blob: BlobRecord) {
    return this.run((db) => db.commitBlob(repo, blob));
  }
  linkBlob(repo: string, digest: Digest) {
    return this.run((db) => db.linkBlob(repo, digest));
  }
  isLinked(repo: string, digest: Digest) {
    return this.run((db) => db.isLinked(repo, digest));
  }
  unlinkBlob(repo: string, digest: Digest) {
    return this.run((db) => db.unlinkBlob(repo, digest));
  }
  unlinkBlobIfUnused(repo: string, digest: Digest) {
    return this.run((db) => db.unlinkBlobIfUnused(repo, digest));
  }
  unlinkEverywhere(digest: Digest) {
    return this.run((db) => db.unlinkEverywhere(digest));
  }
  allBlobs() {
    return this.run((db) => db.allBlobs());
  }
  snapshotsUsing(blob: Digest) {
    return this.run((db) => db.snapshotsUsing(blob));
  }
  danglingRefs() {
    return this.run((db) => db.danglingRefs());
  }

  getManifest(repo: string, digest: Digest) {
    return this.run((db) => db.getManifest(repo, digest));
  }
  manifestExists(repo: string, digest: Digest) {
    return this.run((db) => db.manifestExists(repo, digest));
  }
  commitManifest(m: NewManifest, source: string) {
    return this.run((db) => db.commitManifest(m, source));
  }
  deleteManifest(repo: string, digest: Digest, source: string) {
    return this.run((db) => db.deleteManifest(repo, digest, source));
  }
  listManifests(repo: string) {
    return this.run((db) => db.listManifests(repo));
  }
  manifestsReferencing(repo: string, digest: Digest) {
    return this.run((db) => db.manifestsReferencing(repo, digest));
  }
  referrers(repo: string, subject: Digest) {
    return this.run((db) => db.referrers(repo, subject));
  }

  resolveTag(repo: string, tag: string) {
    return this.run((db) => db.resolveTag(repo, tag));
  }
  setTag(repo: string, tag: string, digest: Digest | null, source: string) {
    return this.run((db) => db.setTag(repo, tag, digest, source));
  }
  listTags(repo: string, n: number, last: string) {
    return this.run((db) => db.listTags(repo, n, last));
  }
  tagsOf(repo: string, digest: Digest) {
    return this.run((db) => db.tagsOf(repo, digest));
  }
  tagHistory(repo: string, tag: string) {
    return this.run((db) => db.tagHistory(repo, tag));
  }
  tagRows(repo: string) {
    return this.run((db) => db.tagRows(repo));
  }

  moveTag(repo: string, tag: string, target: { digest: string } | { tag: string }) {
    return this.transaction((tx) => lifecycle.moveTag(tx, repo, tag, target));
  }
  removeTag(repo: string, tag: string) {
    return this.transaction((tx) => lifecycle.removeTag(tx, repo, tag));
  }
  rollbackTag(repo: string, tag: string, how: { steps?: number; to?: string }) {
    return this.transaction((tx) => lifecycle.rollbackTag(tx, repo, tag, how));
  }
  removeManifest(repo: string, digest: string) {
    return this.transaction((tx) => lifecycle.removeManifest(tx, repo, digest));
  }
  prune(repo: string, opts: { keep: number; match?: string | null; dryRun?: boolean }) {
    return this.transaction((tx) => lifecycle.prune(tx, repo, opts));
  }

  createUpload(id: string, repo: string) {
    return this.run((db) => db.createUpload(id, repo));
  }
  getUpload(id: string) {
    return this.run((db) => db.getUpload(id));
  }
  setUploadSize(id: string, size: number) {
    return this.run((db) => db.setUploadSize(id, size));
  }
  deleteUpload(id: string) {
    return this.run((db) => db.deleteUpload(id));
  }
  clearUploads() {
    return this.run((db) => db.clearUploads());
  }

  gcLiveBlobs(cutoffMs: number) {
    return this.run((db) => db.gcLiveBlobs(cutoffMs));
  }
  gcBlobs(cutoffMs: number, dryRun: boolean) {
    return this.run((db) => db.gcBlobs(cutoffMs, dryRun));
  }

  resolveAlias(d: AnyDigest) {
    return this.run((db) => db.aliases.resolve(d));
  }
  addAlias(alias: Sha512Digest, canonical: Digest) {
    return this.run((db) => db.aliases.add(alias, canonical));
  }
}

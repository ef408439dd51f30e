/**
 * The admin API (docs/admin-api.md) from the client side: tags, history,
 * rollback, listing, removal, prune, stats. Answers are checked against the
 * schemas the server uses (storage/protocol/api.ts); errors arrive as
 * RegistryError with the server's OCI code.
 */
import * as api from '../storage/protocol/api.js';
import type { Registry } from './registry.js';

export type { HistoryEntry, PruneResult, RegistryStats, RepoStats, RepositoryInfo, SnapshotInfo, TagMove } from '../storage/protocol/api.js';

const V1 = '/snapyard/v1';

const tagPath = (repo: string, tag: string) => `${V1}/${repo}/_tags/${encodeURIComponent(tag)}`;

export class AdminClient {
  constructor(private readonly reg: Registry) {}

  /** Points `tag` at `target` (a tag or a manifest digest of the same repository). */
  setTag(repo: string, tag: string, target: string): Promise<api.TagMove> {
    return this.reg.call('PUT', tagPath(repo, tag), api.tagMove, { target });
  }

  deleteTag(repo: string, tag: string) {
    return this.reg.call('DELETE', tagPath(repo, tag), api.tagDeleted);
  }

  history(repo: string, tag: string) {
    return this.reg.call('GET', `${tagPath(repo, tag)}/_history`, api.historyAnswer);
  }

  rollback(repo: string, tag: string, how: { steps?: number; to?: string }) {
    return this.reg.call('POST', `${tagPath(repo, tag)}/_rollback`, api.rollbackAnswer, how);
  }

  async repositories(): Promise<api.RepositoryInfo[]> {
    return (await this.reg.call('GET', `${V1}/_admin/repositories`, api.repositoriesAnswer)).repositories;
  }

  async snapshots(repo: string): Promise<api.SnapshotInfo[]> {
    return (await this.reg.call('GET', `${V1}/${repo}/_snapshots`, api.snapshotsAnswer)).snapshots;
  }

  deleteManifest(repo: string, digest: string) {
    return this.reg.call('DELETE', `${V1}/${repo}/_manifests/${digest}`, api.manifestDeleted);
  }

  prune(repo: string, o: { keep: number; match?: string; dryRun?: boolean }): Promise<api.PruneResult> {
    return this.reg.call('POST', `${V1}/${repo}/_prune`, api.pruneAnswer, o);
  }

  repoStats(repo: string): Promise<api.RepoStats> {
    return this.reg.call('GET', `${V1}/${repo}/_stats`, api.repoStatsAnswer);
  }

  registryStats(): Promise<api.RegistryStats> {
    return this.reg.call('GET', `${V1}/_admin/stats`, api.registryStatsAnswer);
  }
}

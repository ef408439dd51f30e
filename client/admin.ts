/**
 * The admin API (docs/admin-api.md) from the client side: tags, history,
 * rollback, listing, removal, prune, stats. Thin typed wrappers over
 * Registry.json; errors arrive as RegistryError with the server's OCI code.
 */
import type { Registry } from './registry.js';

const V1 = '/snapyard/v1';

export interface TagMove {
  repository: string;
  tag: string;
  old: string | null;
  new: string;
}

export interface HistoryEntry {
  time: string;
  old: string | null;
  new: string | null;
  source: string;
}

export interface RepositoryInfo {
  name: string;
  created: string;
  snapshots: number;
  tags: number;
}

export interface SnapshotInfo {
  digest: string;
  mediaType: string;
  tags: string[];
  created: string;
  blob: string | null;
  size: number | null;
  layout: 'qcow2' | 'bytes' | null;
  virtualSize: number | null;
  storedBytes: number | null;
  indexDigest: string | null;
  base: { subject: string | null; blob: string | null; backingFile: string | null } | null;
}

export interface PruneResult {
  repository: string;
  keep: number;
  match: string | null;
  dryRun: boolean;
  kept: Array<{ tag: string; digest: string; reason: 'newest' | 'base' }>;
  removedTags: Array<{ tag: string; digest: string }>;
  removedManifests: string[];
}

export interface StatsSummary {
  snapshots: number;
  logicalBytes: number;
  storedBytes: number;
  dedupRatio: number | null;
}

export interface RepoStats extends StatsSummary {
  repository: string;
  perSnapshot: Array<{ digest: string; tags: string[]; size: number; storedBytes: number; uniqueBytes: number }>;
  variants: Array<{
    variant: string;
    versions: Array<{ tag: string; version: number; digest: string }>;
    deltas: Array<{ from: string; to: string; bytes: number }>;
  }>;
}

export interface RegistryStats {
  logicalBytes: number;
  storedBytes: number;
  dedupRatio: number | null;
  store: { chunks: number; storedBytes: number; rawBytes: number };
  repositories: Array<StatsSummary & { repository: string }>;
}

const tagPath = (repo: string, tag: string) => `${V1}/${repo}/_tags/${encodeURIComponent(tag)}`;

export class AdminClient {
  constructor(private readonly reg: Registry) {}

  /** Points `tag` at `target` (a tag or a manifest digest of the same repository). */
  setTag(repo: string, tag: string, target: string): Promise<TagMove> {
    return this.reg.json('PUT', tagPath(repo, tag), { target });
  }

  deleteTag(repo: string, tag: string): Promise<{ repository: string; tag: string; old: string }> {
    return this.reg.json('DELETE', tagPath(repo, tag));
  }

  history(repo: string, tag: string): Promise<{ repository: string; tag: string; current: string | null; events: HistoryEntry[] }> {
    return this.reg.json('GET', `${tagPath(repo, tag)}/_history`);
  }

  rollback(repo: string, tag: string, how: { steps?: number; to?: string }): Promise<TagMove & { steps: number | null }> {
    return this.reg.json('POST', `${tagPath(repo, tag)}/_rollback`, how);
  }

  async repositories(): Promise<RepositoryInfo[]> {
    return (await this.reg.json<{ repositories: RepositoryInfo[] }>('GET', `${V1}/_admin/repositories`)).repositories;
  }

  async snapshots(repo: string): Promise<SnapshotInfo[]> {
    return (await this.reg.json<{ snapshots: SnapshotInfo[] }>('GET', `${V1}/${repo}/_snapshots`)).snapshots;
  }

  deleteManifest(repo: string, digest: string): Promise<{ repository: string; digest: string; removedTags: string[] }> {
    return this.reg.json('DELETE', `${V1}/${repo}/_manifests/${digest}`);
  }

  prune(repo: string, o: { keep: number; match?: string; dryRun?: boolean }): Promise<PruneResult> {
    return this.reg.json('POST', `${V1}/${repo}/_prune`, o);
  }

  repoStats(repo: string): Promise<RepoStats> {
    return this.reg.json('GET', `${V1}/${repo}/_stats`);
  }

  registryStats(): Promise<RegistryStats> {
    return this.reg.json('GET', `${V1}/_admin/stats`);
  }
}

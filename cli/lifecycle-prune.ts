/** `snapyard prune REPO --keep N [--match GLOB] [--dry-run] [--json]`. */
import type { RegistryFlags } from './registry-options.js';
import { print, printJson, withAdmin } from './admin-util.js';

export async function pruneCommand(repo: string, o: RegistryFlags & { json?: boolean; keep: number; match?: string; dryRun?: boolean }): Promise<void> {
  const r = await withAdmin(o, (a) => a.prune(repo, { keep: o.keep, ...(o.match !== undefined ? { match: o.match } : {}), dryRun: o.dryRun === true }));
  if (o.json) return printJson(r);
  const verb = r.dryRun ? 'would remove' : 'removed';
  for (const t of r.removedTags) print(`${verb} tag ${r.repository}:${t.tag} (${t.digest})`);
  for (const d of r.removedManifests) print(`${verb} manifest ${r.repository}@${d}`);
  for (const k of r.kept) print(`kept ${r.repository}:${k.tag} (${k.reason === 'base' ? 'base of a kept snapshot' : 'newest'})`);
  if (r.removedTags.length === 0) print(`nothing to ${r.dryRun ? 'remove' : 'prune'} in ${r.repository}`);
}

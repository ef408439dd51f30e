/**
 * The lifecycle commands (issue 4): tag, history, rollback, ls, rm, prune,
 * stats. All of them work against a running registry through its admin API
 * (docs/admin-api.md); the registry is --registry URL, else
 * $SNAPYARD_REGISTRY, else http://127.0.0.1:5000.
 */
import type { Command } from 'commander';
import { SnapyardError } from '../storage/errors.js';
import { parseRef } from '../client/ref.js';
import { print, printJson, short, tagRef, wholeNumber, withAdmin } from './admin-util.js';
import { lsCommand, statsCommand } from './lifecycle-list.js';
import { pruneCommand } from './lifecycle-prune.js';
import { addRegistryOptions, type RegistryFlags } from './registry-options.js';

type Flags = RegistryFlags & { json?: boolean };

export function registerLifecycleCommands(program: Command): void {
  addRegistryOptions(program.command('tag'))
    .description('point a tag at a snapshot (recorded in the tag history)')
    .argument('<ref>', 'the snapshot: repo:tag or repo@sha256:...')
    .argument('<newtag>', 'the tag to point at it (same repository)')
    .action(async (refStr: string, newTag: string, o: Flags) => {
      const ref = parseRef(refStr);
      const to = newTag.includes(':') ? tagRef(newTag) : { repo: ref.repo, tag: newTag };
      if (to.repo !== ref.repo) throw new SnapyardError('INVALID_ARGUMENT', `${newTag}: a tag points into its own repository (${ref.repo})`);
      const r = await withAdmin(o, (a) => a.setTag(ref.repo, to.tag, ref.reference));
      print(`${r.repository}:${r.tag} -> ${r.new}${r.old === r.new ? ' (unchanged)' : r.old ? ` (was ${r.old})` : ' (new tag)'}`);
    });

  addRegistryOptions(program.command('history'))
    .description("a tag's moves, newest first (time, old digest, new digest, source)")
    .argument('<ref>', 'repo:tag')
    .option('--json', 'one JSON list of {time, old, new, source}')
    .action(async (refStr: string, o: Flags) => {
      const ref = tagRef(refStr);
      const h = await withAdmin(o, (a) => a.history(ref.repo, ref.tag));
      if (o.json) return printJson(h.events);
      for (const e of h.events) print(`${e.time}  ${short(e.old).padEnd(19)} -> ${short(e.new).padEnd(19)}  ${e.source}`);
    });

  addRegistryOptions(program.command('rollback'))
    .description('move a tag back: one version (default), N versions (--steps), or to a digest (--to); recorded as a move')
    .argument('<ref>', 'repo:tag')
    .option('--steps <n>', 'versions to go back (default 1; rollbacks undo, see docs/admin-api.md)', wholeNumber('--steps'))
    .option('--to <digest>', 'the manifest digest to point the tag at')
    .action(async (refStr: string, o: Flags & { steps?: number; to?: string }) => {
      const ref = tagRef(refStr);
      if (o.steps !== undefined && o.to !== undefined) throw new SnapyardError('INVALID_ARGUMENT', 'give --steps or --to, not both');
      const how = o.to !== undefined ? { to: o.to } : { steps: o.steps ?? 1 };
      const r = await withAdmin(o, (a) => a.rollback(ref.repo, ref.tag, how));
      print(`rolled back ${r.repository}:${r.tag} from ${r.old} to ${r.new}`);
    });

  addRegistryOptions(program.command('ls'))
    .description("the registry's repositories, or a repository's snapshots (tags, digest, virtual and stored size, created, base)")
    .argument('[repo]')
    .option('--json', 'one JSON list (repositories, or snapshots)')
    .action(async (repo: string | undefined, o: Flags) => lsCommand(repo, o));

  addRegistryOptions(program.command('rm'))
    .description('remove a tag (repo:tag), or a manifest and the tags pointing at it (repo@sha256:...); gc collects the data')
    .argument('<ref>', 'repo:tag or repo@sha256:...')
    .action(async (refStr: string, o: Flags) => {
      const ref = parseRef(refStr);
      await withAdmin(o, async (a) => {
        if (ref.tag !== undefined) {
          const r = await a.deleteTag(ref.repo, ref.tag);
          print(`removed tag ${r.repository}:${r.tag} (was ${r.old})`);
        } else {
          const r = await a.deleteManifest(ref.repo, ref.digest!);
          print(`removed manifest ${r.repository}@${r.digest}${r.removedTags.length > 0 ? ` and its tags ${r.removedTags.join(', ')}` : ''}`);
        }
      });
    });

  addRegistryOptions(program.command('prune'))
    .description('keep the newest N tags (matching --match), remove the others and the snapshots nothing kept needs')
    .argument('<repo>')
    .requiredOption('--keep <n>', 'how many matching tags to keep (most recently moved first)', wholeNumber('--keep'))
    .option('--match <glob>', "which tags are subject to the rule (e.g. 'games-*'; default every tag)")
    .option('--dry-run', 'print what would be removed, remove nothing')
    .option('--json', 'one JSON object {kept, removedTags, removedManifests, ...}')
    .action(async (repo: string, o: Flags & { keep: number; match?: string; dryRun?: boolean }) => pruneCommand(repo, o));

  addRegistryOptions(program.command('stats'))
    .description('logical and stored bytes, dedup ratio, unique bytes per snapshot, deltas between versions')
    .argument('[repo]')
    .option('--json', 'one JSON object (keys in docs/admin-api.md)')
    .action(async (repo: string | undefined, o: Flags) => statsCommand(repo, o));
}

/**
 * `snapyard pull`'s command line. cli/program.ts registers it with every
 * other command; cli/main.ts registers it alone for a pull, so a pull loads
 * only its own modules (node start-up is part of every pull a pod waits for).
 */
import { InvalidArgumentError, type Command } from 'commander';
import { pullCommand } from './remote.js';
import { addRegistryOptions, type RegistryFlags } from './registry-options.js';

/** A flag's parser: a whole number, else commander's usage error naming the flag. */
export function int(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number`);
    return Number(v);
  };
}

export function registerPull(program: Command): void {
  addRegistryOptions(program.command('pull'))
    .description('pull a snapshot as a full image, or with --overlay as a qcow2 overlay over --base, fetching only what is not local')
    .argument('<ref>', 'repo:tag or repo@sha256:...')
    .requiredOption('-o, --output <file>', 'where to write the image')
    .option('--base <file>', 'a local image to reuse (and, with --overlay, the backing file)')
    .option('--overlay', 'write a qcow2 overlay whose backing file is --base')
    .option('--cache <dir>', 'client cache (env SNAPYARD_CACHE, default ~/.cache/snapyard)')
    .option('--cache-max <size>', 'evict least recently used snapshots from the cache once it stores more than this (like 20G; env SNAPYARD_CACHE_MAX)')
    .option('--dry-run', 'print how many bytes the pull would download, and exit')
    .option('--concurrency <n>', 'parallel chunk requests (default 3)', int('--concurrency'))
    .option('--json', 'print one JSON summary object (bytesDownloaded, bytesFromBase, bytesFromCache, chunks, seconds, ...)')
    .action(async (ref: string, o: RegistryFlags & { output: string; base?: string; overlay?: boolean; cache?: string; cacheMax?: string; dryRun?: boolean; concurrency?: number; json?: boolean }) => {
      await pullCommand(ref, o);
    });
}

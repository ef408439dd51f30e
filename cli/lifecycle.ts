import type { Command } from 'commander';

/** tag, history, rollback, ls, rm, prune, stats (issue 4). */
export function registerLifecycleCommands(_program: Command): void {}

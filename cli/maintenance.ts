import type { Command } from 'commander';

/** gc, verify (issue 4). */
export function registerMaintenanceCommands(_program: Command): void {}

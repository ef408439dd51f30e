import type { Command } from 'commander';
import { parseDuration } from './serve-options.js';

export { parseDuration };
import { InvalidArgumentError } from 'commander';
import { runGc, runVerify } from '../client/maintenance.js';
import { addRegistryOptions, withRegistry, type RegistryFlags } from './registry-options.js';

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** "10%", "10", "0.5%" -> 0.1, 0.1, 0.005 (a fraction of the live bytes). */
function parsePercent(v: string): number {
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(v.trim());
  if (!m || Number(m[1]) > 100_000) throw new InvalidArgumentError('must be a percentage, like 10%');
  return Number(m[1]) / 100;
}

/** gc, verify (issue 4). */
export function registerMaintenanceCommands(program: Command): void {
  addRegistryOptions(program.command('gc'))
    .description('collect garbage on a running registry: chunks no manifest uses (older than --grace), then compact packs')
    .option('--dry-run', 'report what would be freed, free nothing')
    .option('--grace <duration>', 'keep unreferenced chunks and blob links younger than this (e.g. 0s, 30m, 24h)', '1h')
    .option('--max-unused <percent>', 'unused bytes left in packs after compaction, as a percentage of the live bytes (default 10%); packs with the most unused bytes are rewritten first', parsePercent)
    .option('--json', 'print the report as one JSON object')
    .action(async (o: RegistryFlags & { dryRun?: boolean; grace: string; maxUnused?: number; json?: boolean }) => {
      const graceSeconds = parseDuration(o.grace);
      const r = await withRegistry(o, (reg) => runGc(reg, { dryRun: o.dryRun === true, graceSeconds, ...(o.maxUnused !== undefined ? { maxUnused: o.maxUnused } : {}) }), 1);
      if (o.json) {
        process.stdout.write(`${JSON.stringify(r)}\n`);
        return;
      }
      const verb = r.dryRun ? 'would free' : 'freed';
      process.stdout.write(`gc ${verb} ${r.chunks} chunks (${mb(r.storedBytes)} stored), ${r.blobsUnlinked} blob links, ${r.blobsDeleted} blobs`);
      process.stdout.write(r.dryRun ? '' : `; packs: ${r.packsRewritten} rewritten, ${r.packsDeleted} deleted, ${mb(r.packBytesFreed)} freed on disk`);
      process.stdout.write(`; kept ${r.marked.chunks} chunks of ${r.marked.blobs} blobs (grace ${r.graceSeconds} s); ${r.seconds.toFixed(2)} s\n`);
      if (r.unreadableBlobs.length > 0) process.stdout.write(`warning: ${r.unreadableBlobs.length} blobs have unreadable indexes (run snapyard verify)\n`);
    });

  addRegistryOptions(program.command('verify'))
    .description('re-hash every chunk and check every blob index resolves; exits 1 and names the affected snapshots if not')
    .option('--repair', 'move corrupt chunks aside (store/quarantine/) and unlink broken blobs, so re-pushing the named snapshots heals the store')
    .option('--json', 'print the report as one JSON object')
    .action(async (o: RegistryFlags & { repair?: boolean; json?: boolean }) => {
      const r = await withRegistry(o, (reg) => runVerify(reg, { repair: o.repair === true }), 1);
      if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        const rate = r.seconds > 0 ? r.storedBytes / 1e6 / r.seconds : 0;
        process.stdout.write(`verified ${r.chunks} chunks (${mb(r.storedBytes)} stored, ${rate.toFixed(0)} MB/s) and ${r.blobs} blob indexes in ${r.seconds.toFixed(2)} s\n`);
        for (const p of r.problems) process.stdout.write(`${p.kind} ${p.digest}${p.blobs.length ? ` (blobs ${p.blobs.join(', ')})` : ''}: ${p.message}\n`);
        if (r.snapshots.length > 0) process.stdout.write(`affected snapshots:\n${r.snapshots.map((s) => `  ${s}\n`).join('')}`);
        if (r.repaired) process.stdout.write(`repaired: ${r.repaired.quarantined} chunks quarantined, ${r.repaired.blobsUnlinked} blobs unlinked; push the affected snapshots again\n`);
        process.stdout.write(r.ok ? 'ok\n' : 'FAILED\n');
      }
      if (!r.ok) process.exitCode = 1;
    });
}

/** Client calls of the maintenance admin endpoints (docs/admin-api.md, "gc / verify"). */
import type { GcReport } from '../storage/maintenance/gc.js';
import type { VerifyReport } from '../storage/maintenance/verify.js';
import type { Registry } from './registry.js';

export type { GcReport, VerifyReport };

export function runGc(reg: Registry, opts: { dryRun?: boolean; graceSeconds?: number; maxUnused?: number }): Promise<GcReport> {
  return reg.json<GcReport>('POST', '/snapyard/v1/_admin/gc', {
    dryRun: opts.dryRun === true,
    ...(opts.graceSeconds !== undefined ? { graceSeconds: opts.graceSeconds } : {}),
    ...(opts.maxUnused !== undefined ? { maxUnused: opts.maxUnused } : {}),
  });
}

export function runVerify(reg: Registry, opts: { repair?: boolean }): Promise<VerifyReport> {
  return reg.json<VerifyReport>('POST', '/snapyard/v1/_admin/verify', { repair: opts.repair === true });
}

/** Client calls of the maintenance admin endpoints (docs/admin-api.md, "gc / verify"). */
import type { GcReport } from '../storage/gc.js';
import type { VerifyReport } from '../storage/verify.js';
import { Registry } from './registry.js';

export type { GcReport, VerifyReport };

export async function runGc(registry: string, opts: { dryRun?: boolean; graceSeconds?: number }): Promise<GcReport> {
  const reg = new Registry(registry, { connections: 1 });
  try {
    return await reg.json<GcReport>('POST', '/snapyard/v1/_admin/gc', {
      dryRun: opts.dryRun === true,
      ...(opts.graceSeconds !== undefined ? { graceSeconds: opts.graceSeconds } : {}),
    });
  } finally {
    await reg.close();
  }
}

export async function runVerify(registry: string, opts: { repair?: boolean }): Promise<VerifyReport> {
  const reg = new Registry(registry, { connections: 1 });
  try {
    return await reg.json<VerifyReport>('POST', '/snapyard/v1/_admin/verify', { repair: opts.repair === true });
  } finally {
    await reg.close();
  }
}

/**
 * GET /healthz (the process answers) and GET /readyz (the store can take
 * work: metadata answers and takes a write lock, the data directory takes a
 * file, free disk is above a threshold); 503 with the reasons otherwise.
 */
import { statfsSync, writeFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Store } from '../storage/open-store.js';
import { respond } from './context.js';

export interface ReadinessOptions {
  /** Below this many free bytes in the data directory the server is not ready (default 256 MiB). */
  minFreeBytes?: number;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; detail?: string }>;
}

export async function checkReadiness(store: Store, opts: ReadinessOptions = {}): Promise<Readiness> {
  const checks: Readiness['checks'] = {};
  const run = async (name: string, fn: () => string | undefined | Promise<string | undefined>) => {
    try {
      const detail = await fn();
      checks[name] = { ok: true, ...(detail ? { detail } : {}) };
    } catch (e) {
      checks[name] = { ok: false, detail: (e as Error).message.slice(0, 300) };
    }
  };
  await run('metadata', async () => {
    await store.meta.probe();
    return undefined;
  });
  await run('data-dir', () => {
    const p = join(store.dataDir, `.readyz-${process.pid}`);
    writeFileSync(p, 'ok');
    unlinkSync(p);
    return undefined;
  });
  await run('free-disk', () => {
    const st = statfsSync(store.dataDir);
    const free = Number(st.bavail) * Number(st.bsize);
    const min = opts.minFreeBytes ?? 256 * 1024 * 1024;
    if (free < min) throw new Error(`${free} bytes free in ${store.dataDir}, below the ${min} needed`);
    return `${free} bytes free`;
  });
  return { ready: Object.values(checks).every((c) => c.ok), checks };
}

export function healthz(): Response {
  return respond(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }, '{"status":"ok"}');
}

export async function readyz(store: Store, opts: ReadinessOptions): Promise<Response> {
  const r = await checkReadiness(store, opts);
  return respond(r.ready ? 200 : 503, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }, JSON.stringify({ status: r.ready ? 'ready' : 'not ready', checks: r.checks }));
}

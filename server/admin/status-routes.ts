/**
 * The web page's server status and the caller's grants (docs/admin-api.md,
 * "Views"):
 *   GET /snapyard/v1/_admin/status             version, backends, disk, chunk store, sessions, last gc and verify
 *   GET /snapyard/v1/_admin/grants?repository=R what the caller may do (the page shows only the actions it may take; the API refuses the others anyway)
 * Status figures are the ones /metrics exports (Metrics keeps the last gc and verify).
 */
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { needsCatalog, needsNothing, type Services } from '../route-table.js';
import type { RequestContext } from '../context.js';
import { checkName } from '../names.js';
import { REPO_ACTIONS } from '../auth/access.js';
import type { AdminRoute } from './types.js';
import { iso, json } from './http.js';
import { readQuery } from './query.js';

/** The package's version, from the package.json above this file (sources or dist/). */
function packageVersion(): string {
  for (const up of ['../..', '../../..']) {
    const p = resolve(import.meta.dirname, up, 'package.json');
    if (!existsSync(p)) continue;
    const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
    if (pkg.name === 'snapyard' && pkg.version) return pkg.version;
  }
  return 'unknown';
}

async function status(ctx: RequestContext, _m: RegExpExecArray, svc: Services): Promise<Response> {
  const store = ctx.store;
  let disk: { path: string; totalBytes: number; freeBytes: number } | null = null;
  try {
    const st = statfsSync(store.dataDir);
    disk = { path: store.dataDir, totalBytes: Number(st.blocks) * Number(st.bsize), freeBytes: Number(st.bavail) * Number(st.bsize) };
  } catch {
    disk = null;
  }
  const blobs = await store.meta.blobTotals();
  const chunks = await store.chunks.stats();
  const gc = svc.metrics.lastGc;
  const verify = svc.metrics.lastVerify;
  return json(200, {
    version: packageVersion(),
    backend: svc.about ?? { store: 'local', metadata: 'sqlite' },
    disk,
    blobs: { count: blobs.blobs, logicalBytes: blobs.bytes },
    chunks: { count: chunks.chunks, storedBytes: chunks.stored, rawBytes: chunks.raw },
    sessionsOpen: store.sessions.open(),
    lastGc: gc ? { time: iso(gc.atMs), dryRun: gc.report.dryRun, chunks: gc.report.chunks, storedBytes: gc.report.storedBytes, seconds: gc.report.seconds } : null,
    lastVerify: verify ? { time: iso(verify.atMs), ok: verify.ok, problems: verify.problems } : null,
  });
}

const grantsQuery = z.object({ repository: z.string().max(256).optional() }).strict();

async function grants(ctx: RequestContext, _m: RegExpExecArray, svc: Services): Promise<Response> {
  const q = readQuery(ctx, grantsQuery);
  const repo = q.repository !== undefined ? checkName(q.repository) : null;
  const p = await svc.auth.identify(ctx.headers.get('authorization') ?? undefined, ctx.url);
  const open = p.via === 'open';
  const actions = repo === null ? [] : open ? [...REPO_ACTIONS] : [...svc.auth.policy.repoActions(p.user, repo)];
  return json(200, { user: p.user, authEnabled: !open, repository: repo, actions, admin: open || svc.auth.policy.isAdmin(p.user) });
}

export const statusRoutes: AdminRoute[] = [
  { name: 'admin.status', method: 'GET', pattern: /^\/snapyard\/v1\/_admin\/status$/, needs: needsCatalog, bodyLimit: 0, handle: status },
  { name: 'admin.grants', method: 'GET', pattern: /^\/snapyard\/v1\/_admin\/grants$/, needs: needsNothing, bodyLimit: 0, handle: grants },
];

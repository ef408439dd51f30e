/**
 * The admin API's views for the web page (docs/admin-api.md, "Views") against
 * a real server on loopback: server-side sorting and pagination (a page's
 * first version still has its delta to the previous one on the page before),
 * the numbers against `_stats`, the cached sizes following a push, history
 * and repository pages, status (last gc), grants, and refused queries.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Oci, prng } from './helpers/oci.js';
import { startTestServer, type TestServer } from './helpers/server.js';

let s: TestServer;
let oci: Oci;
const REPO = 'views/app';
const digests: Record<string, string> = {};

interface Version { tag: string; family: string; version: number | null; digest: string; size: number; storedBytes: number; uniqueBytes: number; previous: { tag: string } | null; deltaBytes: number | null; base: { digest: string } | null }
interface Page<T> { total: number; offset: number; n: number; items: T[] }

async function get<T>(path: string, status = 200): Promise<T> {
  const r = await fetch(`${s.url}/snapyard/v1/${path}`);
  expect(r.status, `${path}: ${r.status}`).toBe(status);
  return (await r.json()) as T;
}

/** Layer of version i: 64 KiB shared by all, plus 16 KiB of its own per version so far (each version adds to the last). */
const layer = (i: number) => Buffer.concat([prng(64 * 1024, 7), ...Array.from({ length: i }, (_, k) => prng(16 * 1024, 100 + k))]);

beforeAll(async () => {
  s = await startTestServer();
  oci = new Oci(s.url);
  for (let i = 1; i <= 7; i++) digests[`app-v${i}`] = (await oci.pushImage(REPO, `app-v${i}`, layer(i))).digest;
  digests.other = (await oci.pushImage(REPO, 'other', prng(8 * 1024, 3), { subject: { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: digests['app-v1'], size: 0 } })).digest;
  for (const t of ['app-v1', 'app-v2', 'app-v3', 'app-v4', 'app-v5']) {
    const r = await fetch(`${s.url}/snapyard/v1/${REPO}/_tags/channel`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ target: t }) });
    expect(r.status).toBe(200);
  }
  await oci.pushImage('views/small', 'one', prng(4096, 9));
});

afterAll(async () => {
  await s?.stop();
});

describe('versions', () => {
  test('grouped by family in version order, paginated on the server; deltas and sizes as _stats reports them', async () => {
    const stats = await get<{ perSnapshot: Array<{ digest: string; storedBytes: number; uniqueBytes: number }>; variants: Array<{ variant: string; deltas: Array<{ from: string; to: string; bytes: number }> }> }>(`${REPO}/_stats`);
    const p1 = await get<Page<Version>>(`${REPO}/_versions?n=3`);
    expect(p1.total).toBe(9); // 7 versions, other, channel
    expect(p1.items.map((v) => v.tag)).toEqual(['app-v1', 'app-v2', 'app-v3']);
    expect(p1.items[0]!.previous).toBeNull();
    const p2 = await get<Page<Version>>(`${REPO}/_versions?n=3&offset=3`);
    expect(p2.items.map((v) => v.tag)).toEqual(['app-v4', 'app-v5', 'app-v6']);
    expect(p2.items[0]!.previous?.tag).toBe('app-v3');
    const deltas = stats.variants.find((v) => v.variant === 'app')!.deltas;
    for (const v of [...p1.items, ...p2.items].slice(1)) {
      expect(v.family).toBe('app');
      expect(v.deltaBytes, v.tag).toBe(deltas.find((d) => d.to === v.tag)!.bytes);
      expect(v.deltaBytes!).toBeGreaterThan(0);
    }
    for (const v of [...p1.items, ...p2.items]) {
      const st = stats.perSnapshot.find((x) => x.digest === v.digest)!;
      expect(v.storedBytes).toBe(st.storedBytes);
      expect(v.uniqueBytes).toBe(st.uniqueBytes);
      expect(v.size).toBe(layer(Number(v.tag.slice(5))).length);
    }
    const all = await get<Page<Version>>(`${REPO}/_versions?n=20`);
    expect(all.items.map((v) => v.family)).toEqual(['app', 'app', 'app', 'app', 'app', 'app', 'app', 'channel', 'other']);
    expect(all.items.find((v) => v.tag === 'other')!.base?.digest).toBe(digests['app-v1']);
    const bySize = await get<Page<Version>>(`${REPO}/_versions?n=2&sort=size`);
    expect(bySize.items.map((v) => v.tag)).toEqual(['app-v7', 'app-v6']);
    const created = await get<Page<Version>>(`${REPO}/_versions?n=1&sort=created`);
    expect(created.items[0]!.tag).toBe('other');
    const family = await get<Page<Version>>(`${REPO}/_versions?family=channel`);
    expect(family.items.map((v) => v.digest)).toEqual([digests['app-v5']]);
  });

  test('overview: totals as _stats, growth ends at them; a push is seen at the next request', async () => {
    const stats = await get<{ snapshots: number; logicalBytes: number; storedBytes: number; dedupRatio: number }>(`${REPO}/_stats`);
    const ov = await get<{ snapshots: number; logicalBytes: number; storedBytes: number; dedupRatio: number; growth: Array<{ logicalBytes: number; storedBytes: number }> }>(`${REPO}/_overview`);
    expect([ov.snapshots, ov.logicalBytes, ov.storedBytes, ov.dedupRatio]).toEqual([stats.snapshots, stats.logicalBytes, stats.storedBytes, stats.dedupRatio]);
    expect(ov.growth.at(-1)).toMatchObject({ logicalBytes: stats.logicalBytes, storedBytes: stats.storedBytes });
    expect(ov.growth.map((g) => g.logicalBytes)).toEqual([...ov.growth.map((g) => g.logicalBytes)].sort((a, b) => a - b));
    await oci.pushImage('views/small', 'two', prng(4096, 10));
    const before = await get<{ snapshots: number }>('views/small/_overview');
    await oci.pushImage('views/small', 'three', prng(4096, 11));
    expect((await get<{ snapshots: number }>('views/small/_overview')).snapshots).toBe(before.snapshots + 1);
  });

  test('after a push (only the new snapshot read) and after a removal (all read again) the sizes still equal _stats', async () => {
    type Stats = { logicalBytes: number; storedBytes: number; perSnapshot: Array<{ digest: string; storedBytes: number; uniqueBytes: number }> };
    const same = async () => {
      const st = await get<Stats>('views/grow/_stats');
      const ov = await get<{ logicalBytes: number; storedBytes: number }>('views/grow/_overview');
      expect([ov.logicalBytes, ov.storedBytes]).toEqual([st.logicalBytes, st.storedBytes]);
      const vs = await get<Page<Version>>('views/grow/_versions?n=100');
      for (const p of st.perSnapshot) {
        const v = vs.items.find((x) => x.digest === p.digest)!;
        expect([v.tag, v.storedBytes, v.uniqueBytes]).toEqual([v.tag, p.storedBytes, p.uniqueBytes]);
      }
      return st;
    };
    const v1 = await oci.pushImage('views/grow', 'g-v1', layer(2));
    const unique1 = (await same()).perSnapshot.find((p) => p.digest === v1.digest)!.uniqueBytes;
    // g-v2 starts with g-v1's bytes: chunks g-v1 held alone are shared now, so its unique bytes drop (an older row the update changes).
    const v2 = await oci.pushImage('views/grow', 'g-v2', layer(4));
    const st = await same();
    expect(st.perSnapshot.find((p) => p.digest === v1.digest)!.uniqueBytes).toBeLessThan(unique1);
    expect(st.perSnapshot.find((p) => p.digest === v2.digest)!.uniqueBytes).toBeGreaterThan(0);
    await oci.pushImage('views/grow', 'g-v3', layer(5));
    await same();
    const rm = await fetch(`${s.url}/snapyard/v1/views/grow/_manifests/${v2.digest}`, { method: 'DELETE' });
    expect(rm.status).toBe(200);
    const after = await same();
    expect(after.perSnapshot).toHaveLength(2);
  });

  test('lineage: subject and version edges with their deltas', async () => {
    const g = await get<{ nodes: Array<{ digest: string }>; edges: Array<{ from: string; to: string; kind: string; deltaBytes: number }> }>(`${REPO}/_lineage`);
    expect(g.nodes).toHaveLength(8);
    expect(g.edges.filter((e) => e.kind === 'base').map((e) => [e.from, e.to])).toEqual([[digests['app-v1'], digests.other]]);
    expect(g.edges.filter((e) => e.kind === 'version')).toHaveLength(6);
    const v2 = (await get<Page<Version>>(`${REPO}/_versions?family=app&n=2`)).items[1]!;
    expect(g.edges.find((e) => e.to === digests['app-v2'])!.deltaBytes).toBe(v2.deltaBytes);
  });
});

describe('history, repositories, snapshot, status, grants', () => {
  test('a tag history page is a slice of the whole history, with its total', async () => {
    const whole = await get<{ total: number; events: unknown[] }>(`${REPO}/_tags/channel/_history`);
    expect(whole.total).toBe(5);
    const page = await get<{ total: number; offset: number; events: unknown[] }>(`${REPO}/_tags/channel/_history?n=2&offset=1`);
    expect(page).toMatchObject({ total: 5, offset: 1 });
    expect(page.events).toEqual(whole.events.slice(1, 3));
  });

  test('repositories by name, a page at a time, with the sizes of _stats', async () => {
    const all = await get<{ total: number; repositories: Array<{ name: string }> }>('_admin/repositories');
    expect(all.repositories.map((r) => r.name)).toEqual(['views/app', 'views/grow', 'views/small']);
    const p = await get<{ total: number; repositories: Array<{ name: string; logicalBytes: number; storedBytes: number; dedupRatio: number }> }>('_admin/repositories?n=1&offset=2&stats=true');
    expect(p.total).toBe(3);
    const st = await get<{ logicalBytes: number; storedBytes: number; dedupRatio: number }>('views/small/_stats');
    expect(p.repositories).toEqual([expect.objectContaining({ name: 'views/small', logicalBytes: st.logicalBytes, storedBytes: st.storedBytes, dedupRatio: st.dedupRatio })]);
  });

  test('a snapshot by tag or digest: sizes, chunk statistics, the pull command', async () => {
    const byTag = await get<{ digest: string; size: number; image: { format: string; size: number }; chunks: { bytes: number }; commands: { pull: string; podInit: string } }>(`${REPO}/_snapshots/app-v3`);
    expect(byTag.digest).toBe(digests['app-v3']);
    expect(byTag.image).toEqual({ format: 'raw', size: layer(3).length });
    expect(byTag.chunks.bytes).toBe(layer(3).length);
    expect(byTag.commands.pull).toBe(`snapyard pull ${REPO}:app-v3 -o disk.qcow2 --registry ${s.url}`);
    expect(byTag.commands.podInit).toContain(`SNAPSHOT_REGISTRY=${s.url}/${REPO} SNAPSHOT_TAG=app-v3`);
    const byDigest = await get<{ tags: string[] }>(`${REPO}/_snapshots/${digests['app-v5']}`);
    expect(byDigest.tags.sort()).toEqual(['app-v5', 'channel']);
    await get(`${REPO}/_snapshots/nope`, 404);
  });

  test('status has the last gc once one ran; grants on an open registry are everything', async () => {
    const before = await get<{ version: string; backend: { store: string; metadata: string }; sessionsOpen: number; lastGc: unknown; chunks: { count: number } }>('_admin/status');
    expect(before.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(before.sessionsOpen).toBe(0);
    expect(before.chunks.count).toBeGreaterThan(0);
    expect(before.backend.metadata.length).toBeGreaterThan(0);
    const gc = await fetch(`${s.url}/snapyard/v1/_admin/gc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"dryRun":true}' });
    expect(gc.status).toBe(200);
    const after = await get<{ lastGc: { dryRun: boolean } | null }>('_admin/status');
    expect(after.lastGc?.dryRun).toBe(true);
    expect(await get('_admin/grants?repository=views/app')).toEqual({ user: null, authEnabled: false, repository: 'views/app', actions: ['pull', 'push', 'delete'], admin: true });
  });

  test('bad queries are refused naming the parameter', async () => {
    for (const q of [`${REPO}/_versions?n=0`, `${REPO}/_versions?sort=name`, `${REPO}/_versions?bogus=1`, `${REPO}/_tags/channel/_history?offset=-1`, '_admin/repositories?stats=yes', '_admin/grants?repository=Bad..Name']) {
      const r = await fetch(`${s.url}/snapyard/v1/${q}`);
      expect(r.status, q).toBe(400);
    }
    const e = (await (await fetch(`${s.url}/snapyard/v1/${REPO}/_versions?n=9999`)).json()) as { errors: Array<{ code: string; message: string }> };
    expect(e.errors[0]).toMatchObject({ code: 'UNSUPPORTED' });
    expect(e.errors[0]!.message).toContain('n:');
  });
});

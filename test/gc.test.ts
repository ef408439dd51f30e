/**
 * Online GC against a real server (in process) and the CLI (bin/snapyard.js):
 * what it frees, what it keeps (byte-exact pulls, qemu-img compare), grace,
 * --dry-run, pins of open upload sessions, upload expiry, and GC running
 * during concurrent pushes (OCI monolithic, OCI chunked, snapyard push).
 */
import { describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { startTestServer, testLocal, type TestServer } from './helpers/server.js';
import { EMPTY_CONFIG, OCI_MANIFEST, Oci, prng, sha } from './helpers/oci.js';
import { tempDirs } from './helpers/tmp.js';
import { makeBaseImage, makeVariant, runTool } from './helpers/qcow2-fixtures.js';
import type { GcReport } from '../storage/maintenance/gc.js';

const BIN = resolve(import.meta.dirname, '..', 'bin', 'snapyard.js');
const execFileP = promisify(execFile);
const tmp = tempDirs('snapyard-gc-');
const CLI_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SNAPYARD_REGISTRY' && k !== 'SNAPYARD_CACHE'));

function cli(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP(process.execPath, [BIN, ...args], { maxBuffer: 64 * 1024 * 1024, env: CLI_ENV });
}

async function gcCli(s: TestServer, ...args: string[]): Promise<GcReport> {
  const { stdout } = await cli(['gc', '--registry', s.url, '--json', ...args]);
  return JSON.parse(stdout) as GcReport;
}

async function gcApi(url: string, body: Record<string, unknown>): Promise<GcReport> {
  const r = await fetch(`${url}/snapyard/v1/_admin/gc`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  if (r.status !== 200) throw new Error(`gc: ${r.status} ${await r.text()}`);
  return (await r.json()) as GcReport;
}

async function getBlob(base: string, repo: string, digest: string): Promise<Buffer | number> {
  const r = await fetch(`${base}/v2/${repo}/blobs/${digest}`);
  if (r.status !== 200) {
    await r.arrayBuffer();
    return r.status;
  }
  return Buffer.from(await r.arrayBuffer());
}

/** What a GET answered, as its sha256 (or `status N`): compared as digests, not byte by byte (vitest's deep equality of megabytes takes seconds). */
function shaOrStatus(got: Buffer | number): string {
  return Buffer.isBuffer(got) ? sha(got) : `status ${got}`;
}

/** A layer made of 96 KiB segments of a shared pool (so blobs share chunks), plus a unique tail. */
function layerOf(picks: number[], tailSeed: number): Buffer {
  return Buffer.concat([...picks.map((p) => prng(96 * 1024, 1000 + p)), prng(50_000 + (tailSeed % 7) * 10_000, tailSeed)]);
}

describe('snapyard gc', () => {
  test('frees the chunks of deleted manifests; --dry-run frees nothing; grace keeps recent chunks; kept images pull byte-identical', async () => {
    const s = await startTestServer();
    try {
      const oci = new Oci(s.url);
      const a = prng(2_000_000, 11);
      const b = Buffer.concat([a.subarray(0, 1_000_000), prng(1_000_000, 12)]);
      const ma = await oci.pushImage('gc/r', 'a', a);
      const mb = await oci.pushImage('gc/r', 'b', b);
      const before = await s.store.chunks.stats();
      expect((await fetch(`${s.url}/v2/gc/r/manifests/${ma.digest}`, { method: 'DELETE' })).status).toBe(202);

      const dry = await gcCli(s, '--dry-run', '--grace', '0s');
      expect(dry.dryRun).toBe(true);
      expect(dry.chunks).toBeGreaterThan(3);
      expect(dry.storedBytes).toBeGreaterThan(500_000);
      expect(await s.store.chunks.stats()).toEqual(before);

      const graced = await gcCli(s, '--grace', '1h');
      expect(graced.chunks).toBe(0);
      expect((await s.store.chunks.stats()).chunks).toBe(before.chunks);
      expect(shaOrStatus(await getBlob(s.url, 'gc/r', ma.layerDigest))).toBe(sha(a)); // still linked: within the grace

      const { stdout } = await cli(['gc', '--registry', s.url, '--grace', '0s']);
      expect(stdout).toMatch(/^gc freed \d+ chunks/);
      const after = await s.store.chunks.stats();
      expect(after.chunks).toBe(before.chunks - dry.chunks);
      expect(after.stored).toBe(before.stored - dry.storedBytes);
      expect(await getBlob(s.url, 'gc/r', ma.layerDigest)).toBe(404);
      expect(shaOrStatus(await getBlob(s.url, 'gc/r', mb.layerDigest))).toBe(sha(b));
      expect((await fetch(`${s.url}/v2/gc/r/manifests/b`)).status).toBe(200);
      // Nothing left to free; the packs shrank on disk.
      expect((await gcCli(s, '--grace', '0s')).chunks).toBe(0);
      const { stdout: v } = await cli(['verify', '--registry', s.url]);
      expect(v).toContain('ok');
    } finally {
      await s.stop();
    }
  });

  test('qcow2: gc after deleting one version keeps the other, which pulls identical (qemu-img compare)', async () => {
    const dir = tmp();
    const base = await makeBaseImage(dir, { sizeMiB: 16, scale: 0.25 });
    const v2 = await makeVariant(dir, base, 'v2');
    const s = await startTestServer();
    try {
      const push = async (tag: string, file: string) => JSON.parse((await cli(['push', `gc/img:${tag}`, file, '--registry', s.url, '--cache', join(dir, `cache-${tag}`), '--json'])).stdout) as { manifestDigest: string };
      await push('v1', base);
      const p2 = await push('v2', v2);
      const before = await s.store.chunks.stats();
      expect((await fetch(`${s.url}/v2/gc/img/manifests/${p2.manifestDigest}`, { method: 'DELETE' })).status).toBe(202);
      const r = await gcCli(s, '--grace', '0s');
      expect(r.chunks).toBeGreaterThan(0);
      expect((await s.store.chunks.stats()).stored).toBeLessThan(before.stored);
      const out = join(dir, 'out.qcow2');
      await cli(['pull', 'gc/img:v1', '-o', out, '--registry', s.url, '--cache', join(dir, 'cache-pull')]);
      expect((await runTool('qemu-img', ['compare', out, base])).stdout).toContain('Images are identical');
    } finally {
      await s.stop();
    }
  });

  testLocal('space comes back: packs mostly live are rewritten until unused bytes are within --max-unused of the live ones', 'all three pushes go into one local pack file, so the removed image leaves a pack mostly live; on S3 each flush puts a pack of its own, the first gc deletes the removed image\'s whole (bucket = live bytes) and nothing is left to rewrite (compaction on S3: test/remote-chunk-maintenance.test.ts)', async () => {
    const s = await startTestServer();
    try {
      const chunks = s.localChunks;
      const onDisk = () => chunks.packNames().reduce((n, p) => n + chunks.packSize(p), 0);
      const oci = new Oci(s.url);
      // One removed image of 1 MB beside a kept one of 3 MB: every pack stays above half live (minLive keeps it).
      const gone = await oci.pushImage('gc/space', 'gone', prng(1_000_000, 31));
      await oci.pushImage('gc/space', 'kept', prng(3_000_000, 32));
      const kept = await oci.pushImage('gc/space', 'kept2', prng(200_000, 33));
      expect((await fetch(`${s.url}/v2/gc/space/manifests/${gone.digest}`, { method: 'DELETE' })).status).toBe(202);
      const loose = await gcCli(s, '--grace', '0s', '--max-unused', '100%');
      expect(loose.chunks).toBeGreaterThan(0);
      expect(loose.packsRewritten).toBe(0);
      expect(onDisk()).toBeGreaterThan(1.2 * chunks.statsNow().stored);
      // The default (10%) rewrites them: what the disk holds is within 1.1x the live bytes.
      const r = await gcCli(s, '--grace', '0s');
      expect(r.packsRewritten).toBeGreaterThan(0);
      expect(r.packBytesFreed).toBeGreaterThan(800_000);
      expect(onDisk()).toBeLessThanOrEqual(1.1 * chunks.statsNow().stored);
      expect(shaOrStatus(await getBlob(s.url, 'gc/space', kept.layerDigest))).toBe(sha(prng(200_000, 33)));
      const { stdout: v } = await cli(['verify', '--registry', s.url]);
      expect(v).toContain('ok');
      // A bad percentage is refused by the CLI.
      await expect(cli(['gc', '--registry', s.url, '--max-unused', 'lots'])).rejects.toThrow(/percentage/);
    } finally {
      await s.stop();
    }
  });

  test("an open upload session's chunks survive gc --grace 0s, and the session still finishes", async () => {
    const s = await startTestServer();
    try {
      const oci = new Oci(s.url);
      const x = prng(3_000_000, 21);
      const mx = await oci.pushImage('gc/up', 'x', x);
      expect((await fetch(`${s.url}/v2/gc/up/manifests/${mx.digest}`, { method: 'DELETE' })).status).toBe(202);
      // A session that re-uploads the first half of x: its chunks are found held, and pinned.
      const start = await oci.req('POST', '/v2/gc/up/blobs/uploads/');
      const loc = start.headers.get('location')!;
      const half = 1_500_000;
      const p1 = await oci.req('PATCH', loc, { body: x.subarray(0, half), headers: { 'Content-Range': `0-${half - 1}` } });
      expect(p1.status).toBe(202);
      expect(s.store.pins.size).toBeGreaterThan(3);
      const r = await gcApi(s.url, { graceSeconds: 0 });
      // Local: the second half of x (not pinned) went. With PostgreSQL coordination an open session holds
      // gc's cutoff back to before its start (the sessions of every replica), so nothing of x goes yet.
      if (s.backend === 'local') expect(r.chunks).toBeGreaterThan(0);
      const p2 = await oci.req('PATCH', loc, { body: x.subarray(half), headers: { 'Content-Range': `${half}-${x.byteLength - 1}` } });
      expect(p2.status).toBe(202);
      const fin = await oci.req('PUT', `${loc}?digest=${sha(x)}`);
      expect(fin.status).toBe(201);
      expect(s.store.pins.size).toBe(0);
      expect(shaOrStatus(await getBlob(s.url, 'gc/up', sha(x)))).toBe(sha(x));
      const { stdout } = await cli(['verify', '--registry', s.url, '--json']);
      expect((JSON.parse(stdout) as { ok: boolean }).ok).toBe(true);
    } finally {
      await s.stop();
    }
  });

  test('idle upload sessions expire (--upload-ttl): pins released, session gone, chunks collectable', async () => {
    const server = await startTestServer({ uploadTtlMs: 300 });
    const store = server.store;
    try {
      const oci = new Oci(server.url);
      const start = await oci.req('POST', '/v2/gc/exp/blobs/uploads/');
      const loc = start.headers.get('location')!;
      expect((await oci.req('PATCH', loc, { body: prng(800_000, 31) })).status).toBe(202);
      expect(store.pins.size).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 1200));
      expect(store.pins.size).toBe(0);
      expect((await oci.req('GET', loc)).status).toBe(404);
      expect((await oci.req('PATCH', loc, { body: prng(10, 1) })).status).toBe(404);
      // The cancelled ingest's rows are committed by the first gc (with a fresh time), the second takes them.
      let freed = (await gcApi(server.url, { graceSeconds: 0 })).chunks;
      await new Promise((r) => setTimeout(r, 20));
      freed += (await gcApi(server.url, { graceSeconds: 0 })).chunks;
      expect(freed).toBeGreaterThan(3);
      expect((await store.chunks.stats()).chunks).toBe(0);
    } finally {
      await server.stop();
    }
  });

  test('gc --grace 0s running during concurrent pushes (monolithic, chunked, snapyard push) loses nothing', async () => {
    const s = await startTestServer({ workers: 2 });
    const dir = tmp();
    try {
      const oci = new Oci(s.url);
      const live = new Map<string, { repo: string; layer: Buffer; manifest: string }>(); // by tag
      let retries = 0;
      let n = 0;
      const pickSeeds = (k: number) => Array.from({ length: 6 }, (_, i) => (k * 7 + i * 3) % 14);
      const monolithic = async (repo: string, tag: string, layer: Buffer) => {
        await oci.pushBlob(repo, '{}');
        await oci.pushBlob(repo, layer);
      };
      const chunked = async (repo: string, tag: string, layer: Buffer) => {
        await oci.pushBlob(repo, '{}');
        const loc = (await oci.req('POST', `/v2/${repo}/blobs/uploads/`)).headers.get('location')!;
        const cut = [0, Math.floor(layer.byteLength / 3), Math.floor((2 * layer.byteLength) / 3), layer.byteLength];
        for (let i = 0; i < 3; i++) {
          const r = await oci.req('PATCH', loc, { body: layer.subarray(cut[i]!, cut[i + 1]!), headers: { 'Content-Range': `${cut[i]}-${cut[i + 1]! - 1}` } });
          if (r.status !== 202) throw new Error(`patch ${r.status}`);
        }
        const fin = await oci.req('PUT', `${loc}?digest=${sha(layer)}`);
        if (fin.status !== 201) throw new Error(`put ${fin.status} ${await fin.text()}`);
      };
      const putManifest = async (repo: string, tag: string, layer: Buffer): Promise<string | null> => {
        const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [{ mediaType: 'application/octet-stream', digest: sha(layer), size: layer.byteLength }] });
        const r = await oci.req('PUT', `/v2/${repo}/manifests/${tag}`, { body, headers: { 'Content-Type': OCI_MANIFEST } });
        if (r.status === 201) return r.headers.get('docker-content-digest');
        const text = await r.text();
        if (!text.includes('MANIFEST_BLOB_UNKNOWN')) throw new Error(`manifest ${r.status} ${text}`);
        return null; // gc (grace 0s) unlinked the blob between its commit and this put: push again
      };
      const pushOne = async (k: number, how: 'mono' | 'chunked' | 'cli') => {
        const repo = `gc/c${k % 3}`;
        const tag = `t${k}`;
        const layer = layerOf(pickSeeds(k), 5000 + k);
        for (let attempt = 0; attempt < 20; attempt++) {
          if (attempt > 0) retries++;
          let digest: string | null;
          if (how === 'cli') {
            const file = join(dir, `${tag}.bin`);
            writeFileSync(file, layer);
            try {
              const { stdout } = await cli(['push', `${repo}:${tag}`, file, '--registry', s.url, '--cache', join(dir, `cache-${k}`), '--json']);
              digest = (JSON.parse(stdout) as { manifestDigest: string }).manifestDigest;
            } catch (e) {
              const err = String((e as { stderr?: string }).stderr);
              if (!err.includes('MANIFEST_BLOB_UNKNOWN')) throw e;
              digest = null;
            }
          } else {
            await (how === 'mono' ? monolithic : chunked)(repo, tag, layer);
            digest = await putManifest(repo, tag, layer);
          }
          if (!digest) console.log(`retry ${tag} (${how})`);
          if (digest) {
            live.set(tag, { repo, layer, manifest: digest });
            return;
          }
        }
        throw new Error(`push ${tag} never got through`);
      };
      let stop = false;
      let gcs = 0;
      let freed = 0;
      const gcLoop = (async () => {
        while (!stop) {
          const r = await gcApi(s.url, { graceSeconds: 0, minLive: 0.9 });
          gcs++;
          freed += r.chunks;
          await new Promise((res) => setTimeout(res, 30));
        }
      })();
      const hows = ['mono', 'chunked', 'cli'] as const;
      try {
      for (let round = 0; round < 4; round++) {
        const jobs: Array<Promise<void>> = [];
        for (let j = 0; j < 5; j++) {
          const k = n++;
          jobs.push(pushOne(k, hows[(k + round) % 3]!));
        }
        await Promise.all(jobs);
        // Delete a couple of snapshots so gc has something to take.
        for (const tag of [...live.keys()].slice(0, 2)) {
          const e = live.get(tag)!;
          expect((await fetch(`${s.url}/v2/${e.repo}/manifests/${e.manifest}`, { method: 'DELETE' })).status).toBe(202);
          live.delete(tag);
        }
      }
      } finally {
        stop = true;
        await gcLoop;
      }
      await gcApi(s.url, { graceSeconds: 0 });
      expect(gcs).toBeGreaterThan(3);
      expect(freed).toBeGreaterThan(0);
      for (const [tag, e] of live) {
        const got = await getBlob(s.url, e.repo, sha(e.layer));
        expect(shaOrStatus(got), tag).toBe(sha(e.layer));
        expect((await fetch(`${s.url}/v2/${e.repo}/manifests/${tag}`)).status).toBe(200);
      }
      const { stdout } = await cli(['verify', '--registry', s.url, '--json']);
      const v = JSON.parse(stdout) as { ok: boolean; problems: unknown[] };
      expect(v.problems).toEqual([]);
      console.log(`concurrent: ${n} pushes, ${retries} retries after gc unlinked a fresh blob, ${gcs} gc runs freed ${freed} chunks`);
    } finally {
      await s.stop();
    }
  }, 60_000);
});

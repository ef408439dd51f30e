/**
 * `snapyard prefetch REF...` warms a cache (the node cache DaemonSet): a
 * later pull through that cache fetches no chunk, and a second prefetch
 * fetches nothing.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { cliOk } from './helpers/cli.js';
import { makeBaseImage, makeVariant } from './helpers/qcow2-fixtures.js';
import { prng } from './helpers/oci.js';

let s: TestServer;
let dir: string;

beforeAll(async () => {
  s = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'snapyard-prefetch-'));
});

afterAll(async () => {
  await s?.stop();
});

test('prefetch of two snapshots, then pulls through the same cache download no chunk', async () => {
  const base = await makeBaseImage(dir);
  const variant = await makeVariant(dir, base, 'games');
  const raw = join(dir, 'raw.img');
  writeFileSync(raw, prng(2 * 1024 * 1024, 8));
  for (const [tag, f] of [['base', base], ['games', variant], ['raw', raw]] as const) await cliOk(['push', `pf/win98:${tag}`, f, '--registry', s.url, '--cache', join(dir, 'push-cache')]);
  const cache = join(dir, 'node-cache');
  const out = await cliOk(['prefetch', 'pf/win98:base', 'pf/win98:games', 'pf/win98:raw', '--registry', s.url, '--cache', cache, '--json']);
  const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { chunks: number; chunksFetched: number; bytesDownloaded: number });
  expect(lines).toHaveLength(3);
  expect(lines[0]!.chunksFetched).toBe(lines[0]!.chunks);
  // The variant shares most chunks with the base: only its own are fetched.
  expect(lines[1]!.chunksFetched).toBeLessThan(lines[1]!.chunks);
  for (const [tag, f] of [['games', variant], ['raw', raw]] as const) {
    const o = join(dir, `${tag}.out`);
    const p = JSON.parse(await cliOk(['pull', `pf/win98:${tag}`, '-o', o, '--registry', s.url, '--cache', cache, '--json'])) as { chunks: { downloaded: number } };
    expect(p.chunks.downloaded).toBe(0);
    expect(readFileSync(o).equals(readFileSync(f))).toBe(true);
  }
  const again = JSON.parse((await cliOk(['prefetch', 'pf/win98:games', '--registry', s.url, '--cache', cache, '--json'])).trim()) as { chunksFetched: number };
  expect(again.chunksFetched).toBe(0);
}, 120_000);

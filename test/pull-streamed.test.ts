/**
 * Full pulls write the image while its chunks download (client/streamed-image.ts):
 * the cache's worker that verifies a downloaded chunk writes it at every place
 * it has in the file; other chunks (from the cache, delta-encoded ones) are
 * written by the pull itself. The image must be byte-exact whatever mix it is
 * made of, and a pull that fails leaves neither the image nor its part file.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { runTool } from './helpers/qcow2-fixtures.js';
import { useMountFixture } from './helpers/mount-fixture.js';
import { tempDirs } from './helpers/tmp.js';
import { cliOk, runCli } from './helpers/cli.js';

const tmp = tempDirs('snapyard-pull-streamed-');
const f = useMountFixture(tmp);
const MiB = 1024 * 1024;

interface Summary {
  bytesDownloaded: number;
  chunks: { total: number; fromCache: number; downloaded: number };
}

async function pullJson(ref: string, out: string, cache: string): Promise<Summary> {
  return JSON.parse(await cliOk(['pull', ref, '-o', out, '--json', '--registry', f.proxy.url, '--cache', cache])) as Summary;
}

describe('pull: a full image written as its chunks arrive', () => {
  test('chunks repeated in the file are downloaded once and written at every place', async () => {
    const dir = tmp();
    const a = randomBytes(3 * MiB);
    const b = randomBytes(2 * MiB);
    const file = join(dir, 'repeats.bin');
    writeFileSync(file, Buffer.concat([a, b, a, b, a, randomBytes(MiB)]));
    await cliOk(['push', 'loco/raw:repeats', file, '--registry', f.s.url, '--cache', join(dir, 'push-cache')]);
    const out = join(dir, 'out.bin');
    const r = await pullJson('loco/raw:repeats', out, join(dir, 'cache'));
    await runTool('cmp', [out, file]);
    // 14 MiB of file, about 6 MiB of distinct random (incompressible) data.
    expect(r.bytesDownloaded).toBeLessThan(8 * MiB);
    expect(r.chunks.downloaded).toBe(r.chunks.total);
  }, 120_000);

  test('a full pull of a variant through a cache holding its base: cached, delta-encoded and stored chunks make a byte-exact image', async () => {
    const dir = tmp();
    const cache = join(dir, 'cache');
    await pullJson('loco/win98:base', join(dir, 'base.qcow2'), cache);
    const out = join(dir, 'games.qcow2');
    const r = await pullJson('loco/win98:games', out, cache);
    expect(r.chunks.fromCache).toBeGreaterThan(0);
    expect(r.chunks.downloaded).toBeGreaterThan(0);
    await runTool('cmp', [out, f.img.games]);
  }, 120_000);

  test('a chunk corrupted in the middle of a response: the pull fails and leaves no image and no part file; the next pull is byte-exact', async () => {
    const dir = tmp();
    const out = join(dir, 'games.qcow2');
    const cache = join(dir, 'cache');
    // Well into the first response: chunks before it were verified and already written into the part file.
    f.proxy.corruptNext(300_000);
    const bad = await runCli(['pull', 'loco/win98:games', '-o', out, '--registry', f.proxy.url, '--cache', cache]);
    expect(f.proxy.corrupted()).toBe(true);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/^snapyard: /m);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.snapyard-part`)).toBe(false);
    await pullJson('loco/win98:games', out, cache);
    await runTool('cmp', [out, f.img.games]);
  }, 120_000);
});

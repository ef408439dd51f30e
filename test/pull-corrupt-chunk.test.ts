/**
 * A full pull whose chunks arrive in their stored form and go into the client
 * cache as they are (ChunkWriter.addStored): a chunk corrupted in flight must
 * still be caught (the cache's workers decode and hash each one), fail the
 * pull with CHUNK_CORRUPT, and leave nothing bad behind: the next pull through
 * the same cache is byte-exact.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { runTool } from './helpers/qcow2-fixtures.js';
import { useMountFixture } from './helpers/mount-fixture.js';
import { tempDirs } from './helpers/tmp.js';
import { runCli } from './helpers/cli.js';

const tmp = tempDirs('snapyard-pull-corrupt-');
const f = useMountFixture(tmp);

describe('pull: stored chunks kept as they are, still verified', () => {
  test('a flipped byte in a _chunks response fails the pull (CHUNK_CORRUPT, nothing written); the retry through the same cache is byte-exact', async () => {
    const dir = tmp();
    const out = join(dir, 'games.qcow2');
    const flags = ['--registry', f.proxy.url, '--cache', join(dir, 'cache')];
    // Inside the first frame's payload, past its 40-byte frame header and the stored form's 12-byte header: zstd data, or raw bytes that no longer hash.
    f.proxy.corruptNext(200);
    const bad = await runCli(['pull', 'loco/win98:games', '-o', out, ...flags]);
    expect(f.proxy.corrupted()).toBe(true);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr, bad.stderr).toMatch(/CHUNK_CORRUPT/);
    expect(existsSync(out)).toBe(false);
    const before = f.proxy.counts().chunkBytes;
    const good = await runCli(['pull', 'loco/win98:games', '-o', out, '--json', ...flags]);
    expect(good.code, good.stderr).toBe(0);
    await runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', out, f.img.games]);
    await runTool('cmp', [out, f.img.games]);
    // What the first pull kept (batches other than the bad one) is not fetched again.
    expect(f.proxy.counts().chunkBytes - before).toBeGreaterThan(0);
  }, 180_000);
});

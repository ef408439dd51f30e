/**
 * The lazy mount tests' world: a real registry with a base image and a
 * variant of it pushed (loco/win98:base, loco/win98:games), reached through
 * a chunk proxy (counts, corrupts, goes away), and the mount's usual flags.
 */
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { startTestServer, type TestServer } from './server.js';
import { cliOk } from './cli.js';
import { makeBaseImage, makeVariant, runTool } from './qcow2-fixtures.js';
import { startChunkProxy, type ChunkProxy } from './chunk-proxy.js';

export interface MountFixture {
  s: TestServer;
  proxy: ChunkProxy;
  img: { base: string; games: string };
  /** Flags of a mount through the proxy with its cache in `dir` (prefetch off unless `extra` sets it). */
  args(dir: string, extra?: string[]): string[];
  /** Runs `fn` with the registry gone (the proxy down), brought back afterwards. */
  offline<T>(fn: () => Promise<T>): Promise<T>;
}

/** Registers the registry, images and proxy for the test file (`dir()` makes a temporary directory). */
export function useMountFixture(dir: () => string): MountFixture {
  const f = { img: { base: '', games: '' } } as MountFixture;
  beforeAll(async () => {
    f.s = await startTestServer();
    f.proxy = await startChunkProxy(f.s.url);
    const work = dir();
    f.img.base = await makeBaseImage(work);
    f.img.games = await makeVariant(work, f.img.base, 'games');
    for (const [tag, file] of [['base', f.img.base], ['games', f.img.games]] as const) {
      await cliOk(['push', `loco/win98:${tag}`, file, '--registry', f.s.url, '--cache', join(work, 'push-cache')]);
    }
  }, 180_000);
  afterAll(async () => {
    await f.proxy?.close();
    await f.s?.stop();
  });
  f.args = (d, extra = []) => ['--registry', f.proxy.url, '--cache', join(d, 'cache'), '--prefetch-rate', '0', ...extra];
  f.offline = async (fn) => {
    await f.proxy.down();
    try {
      return await fn();
    } finally {
      await f.proxy.up();
    }
  };
  return f;
}

/** `qemu-img compare` of an export (raw) with an image (qcow2): resolves when the guest views are identical. */
export async function compareExport(url: string, image: string): Promise<void> {
  await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', url, image]);
}

/**
 * `snapyard mount` under the conditions a pod meets: QEMU's overlay over the
 * export, the mount killed -9 and restarted, a chunk corrupted in flight, a
 * registry that goes away, reads racing the background prefetch.
 */
import { closeSync, openSync, readdirSync, readSync, rmSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { qemuInfo, runTool } from './helpers/qcow2-fixtures.js';
import { compareExport, useMountFixture } from './helpers/mount-fixture.js';
import { startMount } from './helpers/mount-process.js';
import { tempDirs } from './helpers/tmp.js';
import { cleanEnv, cliOk, runCli } from './helpers/cli.js';
import Database from 'better-sqlite3';

const MiB = 1024 * 1024;
const tmp = tempDirs('snapyard-mount-f-');
const f = useMountFixture(tmp);

describe('snapyard mount: overlay and failures', () => {
  test('--overlay: a qcow2 overlay backed by the export takes qemu-io writes locally; the export still reads as the image; a second mount reuses it, a mount of another snapshot refuses it', async () => {
    const dir = tmp();
    const sock = join(dir, 'nbd.sock');
    const overlay = join(dir, 'instance.qcow2');
    const m = await startMount('loco/win98:games', sock, f.args(dir, ['--overlay', overlay]));
    const size = (await qemuInfo(f.img.games)).virtualSize;
    const last = size - 64 * 1024;
    try {
      expect(m.listening).toMatchObject({ overlay, overlayAction: 'created' });
      expect((await qemuInfo(overlay)).backingFilename).toBe(`nbd+unix:///?socket=${sock}`);
      await runTool('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x6b ${last} 64k`, overlay]);
      await runTool('qemu-io', ['-f', 'qcow2', '-c', `read -P 0x6b ${last} 64k`, overlay]);
      // The overlay reads as the image up to the range written (served through the export), the export as the image.
      await expect(runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', overlay, f.img.games])).rejects.toThrow(new RegExp(`Content mismatch at offset ${last}!`));
      await compareExport(m.url(), f.img.games);
    } finally {
      await m.stop();
    }
    const m2 = await startMount('loco/win98:games', sock, f.args(dir, ['--overlay', overlay]));
    try {
      expect(m2.listening).toMatchObject({ overlay, overlayAction: 'reused' });
      await runTool('qemu-io', ['-f', 'qcow2', '-c', `read -P 0x6b ${last} 64k`, overlay]);
    } finally {
      await m2.stop();
    }
    // Another snapshot behind the same socket path: the overlay's writes belong to the first one, it is refused and left alone.
    const before = await readFile(overlay);
    const other = await runCli(['mount', 'loco/win98:base', '--socket', sock, ...f.args(dir, ['--overlay', overlay])]);
    expect(other.code).toBe(2);
    expect(other.stderr).toMatch(/CONFLICT: --overlay .* was made over sha256:[0-9a-f]{64}, the export now serves sha256:/);
    expect((await readFile(overlay)).equals(before)).toBe(true);
  }, 120_000);

  test('kill -9 mid-way, restart on the same socket and cache: it resumes from the cache and fetches only the rest', async () => {
    const dir = tmp();
    const sock = join(dir, 'nbd.sock');
    const m = await startMount('loco/win98:games', sock, f.args(dir));
    await runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4M', m.url()]);
    // The mount flushes its cache in the background once a fetch has answered: the kill comes after that flush.
    await committedChunks(join(dir, 'cache'));
    await m.kill9();
    // A dead server: qemu gets an error, not zeros.
    await expect(runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4k', m.url()])).rejects.toThrow();
    const m2 = await startMount('loco/win98:games', sock, f.args(dir));
    const total = m2.listening.chunks as number;
    const local = (await m2.waitFor('ready')).chunksLocal as number;
    try {
      expect(local).toBeGreaterThan(0);
      await compareExport(m2.url(), f.img.games);
    } finally {
      const s = await m2.stop();
      expect(s.chunks).toBeGreaterThan(0);
      expect(s.chunks).toBeLessThanOrEqual(total - local);
    }
  }, 120_000);

  test('a chunk corrupted in flight (one byte of a _chunks response flipped) is fetched again; the export is byte-exact', async () => {
    const dir = tmp();
    const m = await startMount('loco/win98:games', join(dir, 'nbd.sock'), f.args(dir));
    try {
      f.proxy.corruptNext();
      await compareExport(m.url(), f.img.games);
      expect(f.proxy.corrupted()).toBe(true);
    } finally {
      const s = await m.stop();
      expect(s.retries).toBeGreaterThanOrEqual(1);
    }
  }, 120_000);

  test('a chunk corrupted in the node cache is never served: with the registry gone that read gets EIO; it is moved aside and fetched again, and the export is byte-exact', async () => {
    const dir = tmp();
    const first = await startMount('loco/win98:games', join(dir, 'nbd.sock'), f.args(dir));
    try {
      await compareExport(first.url(), f.img.games); // every chunk the guest view reads is in the cache now
    } finally {
      await first.stop();
    }
    flipFirstRecordByte(join(dir, 'cache', 'chunks', 'packs'));
    const m = await startMount('loco/win98:games', join(dir, 'nbd.sock'), f.args(dir, ['--read-timeout', '2']));
    let s: { chunks: number; cacheCorrupt: number };
    try {
      // The registry gone: the corrupt chunk's read fails (an I/O error), never a content mismatch.
      await f.offline(() => expect(compareExport(m.url(), f.img.games)).rejects.toThrow(/Input\/output error|error while reading/i));
      await compareExport(m.url(), f.img.games);
    } finally {
      s = (await m.stop()) as unknown as typeof s;
    }
    expect(s.cacheCorrupt).toBeGreaterThanOrEqual(1);
    expect(s.chunks).toBe(1); // only the corrupt one fetched again
    expect(readdirSync(join(dir, 'cache', 'chunks', 'quarantine'))).toHaveLength(1);
  }, 120_000);

  test('the local copy: what was answered is read again from the mount\'s own plain copy (an unlinked file), so a range read twice is right even with the node cache corrupted under it and the registry gone; with --local-copy 0 it is not', async () => {
    const dir = tmp();
    const sock = join(dir, 'nbd.sock');
    const m = await startMount('loco/win98:games', sock, f.args(dir, ['--read-timeout', '2']));
    let s: { cacheCorrupt: number; copyReads: number; copyBytes: number };
    try {
      await compareExport(m.url(), f.img.games); // into the cache, and into the copy
      expect(readdirSync(join(dir, 'cache', 'mounts'))).toEqual([]); // the copy's file is open, not named
      flipFirstRecordByte(join(dir, 'cache', 'chunks', 'packs'));
      await f.offline(() => compareExport(m.url(), f.img.games)); // the same reads: all from the copy
    } finally {
      s = (await m.stop()) as unknown as typeof s;
    }
    expect(s.cacheCorrupt).toBe(0);
    expect(s.copyReads).toBeGreaterThan(0);
    expect(s.copyBytes).toBeGreaterThan(0);
    // Without the copy the same reads go to the cache: the corrupt chunk is caught, and with the registry gone that read fails.
    const m2 = await startMount('loco/win98:games', sock, f.args(dir, ['--read-timeout', '2', '--local-copy', '0']));
    try {
      await f.offline(() => expect(compareExport(m2.url(), f.img.games)).rejects.toThrow(/Input\/output error|error while reading/i));
    } finally {
      s = (await m2.stop()) as unknown as typeof s;
    }
    expect(s.cacheCorrupt).toBeGreaterThanOrEqual(1);
    expect(s.copyReads).toBe(0);
  }, 120_000);

  test('the registry goes away: a read the node cannot answer gets EIO after --read-timeout, never zeros; once it is back, the same mount serves', async () => {
    const dir = tmp();
    const m = await startMount('loco/win98:games', join(dir, 'nbd.sock'), f.args(dir, ['--read-timeout', '2']));
    try {
      await f.offline(() => expect(runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 64k', m.url()])).rejects.toThrow(/Input\/output error/));
      await compareExport(m.url(), f.img.games);
    } finally {
      await m.stop();
    }
  }, 120_000);

  test('prefetch: reads racing the background fetch are right, no chunk is fetched twice, and once all arrived the registry can go away', async () => {
    const dir = tmp();
    const m = await startMount('loco/win98:games', join(dir, 'nbd.sock'), f.args(dir, ['--prefetch-rate', `${4 * MiB}`]));
    try {
      expect((await m.waitFor('ready')).prefetchRate).toBe(4 * MiB);
      await Promise.all([compareExport(m.url(), f.img.games), runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read 32M 32M', '-c', 'read 0 32M', m.url()])]);
      await m.waitFor('prefetched', 90_000);
      await f.offline(() => compareExport(m.url(), f.img.games));
    } finally {
      const s = await m.stop();
      expect(s.chunks).toBeGreaterThan(0);
      expect(s.chunks).toBeLessThanOrEqual(m.listening.chunks as number);
    }
  }, 150_000);

  test('pod-init --lazy where a full pod-init left an earlier snapshot on the node: that disk seeds the mount (its chunks read, not fetched), its index taken from the cache', async () => {
    const podEnv = (dir: string, tag: string, extra: Record<string, string> = {}) => ({
      USE_PREBUILT_SNAPSHOT: 'true', SNAPSHOT_REGISTRY: `${f.proxy.url.replace(/^http:\/\//, '')}/loco/win98`, SNAPSHOT_TAG: tag,
      SNAPYARD_INSECURE: 'true', SNAPSHOT_DIR: dir, SNAPSHOT_SOCKET: join(dir, 'nbd.sock'), SNAPYARD_PREFETCH_RATE: '0', ...extra,
    });
    const lazyGames = async (dir: string) => {
      const m = await startMount('', join(dir, 'nbd.sock'), [], { argv: ['pod-init', '--json'], env: podEnv(dir, 'games', { SNAPSHOT_LAZY: 'true', POD_NAME: 'emulator-2' }) });
      let bytes = 0;
      try {
        await compareExport(m.url(), f.img.games);
      } finally {
        bytes = (await m.stop()).wireBytes;
      }
      return bytes;
    };
    const seeded = tmp();
    await cliOk(['pod-init', '--json'], { env: cleanEnv(podEnv(seeded, 'base', { POD_NAME: 'emulator-1' })) });
    // The cache's chunks gone (evicted), its indexes and the disk left: only the disk can spare the fetch.
    rmSync(join(seeded, '.snapyard-cache', 'chunks'), { recursive: true, force: true });
    const withSeed = await lazyGames(seeded);
    const withoutSeed = await lazyGames(tmp());
    expect(withSeed).toBeGreaterThan(0);
    expect(withSeed).toBeLessThan(withoutSeed / 4);
  }, 150_000);

  test('pod-init --lazy (SNAPSHOT_LAZY=true): the pod contract served as a sidecar: win98_instance_<N>.qcow2 over the export, kept in persistent mode, recreated in ephemeral mode', async () => {
    const dir = tmp();
    const sock = join(dir, 'nbd.sock');
    const overlay = join(dir, 'win98_instance_2.qcow2');
    const env = (extra: Record<string, string> = {}) => ({
      USE_PREBUILT_SNAPSHOT: 'true', SNAPSHOT_LAZY: 'true', SNAPSHOT_REGISTRY: `${f.proxy.url.replace(/^http:\/\//, '')}/loco/win98`, SNAPSHOT_TAG: 'games',
      SNAPYARD_INSECURE: 'true', SNAPSHOT_DIR: dir, POD_NAME: 'emulator-2', SNAPSHOT_SOCKET: sock, SNAPYARD_PREFETCH_RATE: '0', ...extra,
    });
    const pod = (extra?: Record<string, string>) => startMount('', sock, [], { argv: ['pod-init', '--json'], env: env(extra) });
    const m = await pod();
    try {
      expect(m.listening).toMatchObject({ ref: 'loco/win98:games', overlay, overlayAction: 'created', exports: [`nbd+unix:///?socket=${sock}`, `nbd+unix:///loco/win98:games?socket=${sock}`] });
      await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x2e 4M 64k', overlay]);
      await compareExport(m.url(), f.img.games);
    } finally {
      await m.stop();
    }
    const again = await pod();
    try {
      expect(again.listening).toMatchObject({ overlayAction: 'reused' });
      await runTool('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x2e 4M 64k', overlay]);
    } finally {
      await again.stop();
    }
    const fresh = await pod({ SNAPSHOT_MODE: 'ephemeral' });
    try {
      expect(fresh.listening).toMatchObject({ overlayAction: 'created' });
      await expect(runTool('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', overlay, f.img.games])).resolves.toBeDefined();
    } finally {
      await fresh.stop();
    }
  }, 120_000);
});

/** Flips one byte in the stored bytes of the first record of the cache's first pack (all of them guest-view chunks). */
function flipFirstRecordByte(packs: string): void {
  const pack = join(packs, readdirSync(packs).sort()[0]!);
  const fd = openSync(pack, 'r+');
  try {
    const header = Buffer.alloc(40);
    readSync(fd, header, 0, 40, 0);
    expect(header.toString('latin1', 0, 4)).toBe('SYR1');
    const at = 40 + Math.floor(header.readUInt32LE(36) / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    writeSync(fd, b, 0, 1, at);
  } finally {
    closeSync(fd);
  }
}

/** Waits (up to 10 s) until the node cache's index has committed rows (read-only: the mount holds it open), and returns how many. */
async function committedChunks(cache: string): Promise<number> {
  for (let i = 0; ; i++) {
    const db = new Database(join(cache, 'chunks', 'index.db'), { readonly: true, fileMustExist: true });
    try {
      const n = (db.prepare('SELECT count(*) AS n FROM chunks').get() as { n: number }).n;
      if (n > 0 || i >= 100) return n;
    } finally {
      db.close();
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

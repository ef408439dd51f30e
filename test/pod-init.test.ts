/**
 * `snapyard pod-init` with the emulator pods' environment against a real
 * server: the snapshot at DISK and win98_instance_<N>.qcow2 over it
 * (`qemu-img check` clean, guest-identical to the pushed image), a variant
 * written as an overlay over a base the node holds, restarts that download
 * nothing, eight pods starting at once on one directory, a parent that
 * changed under a persistent overlay, ephemeral mode, branches, a registry
 * that is down, a base deleted under an overlay snapshot.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { cleanEnv, cliOk, runCli } from './helpers/cli.js';
import { guestContentEqual, makeBaseImage, makeVariant, qemuInfo, runTool, standardVariantEdits } from './helpers/qcow2-fixtures.js';

interface Result {
  action: string;
  snapshot: string;
  snapshotForm: string;
  overlay: string;
  overlayAction: string;
  bytesDownloaded: number;
  offline: boolean;
  blob: string;
}

let s: TestServer;
let work: string;
const img = { base: '', games: '', games2: '' };

function podEnv(dir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return cleanEnv({
    USE_PREBUILT_SNAPSHOT: 'true',
    SNAPSHOT_REGISTRY: `${s.host}/loco/win98`,
    SNAPYARD_INSECURE: 'true',
    SNAPSHOT_DIR: dir,
    DISK: join(dir, 'win98.qcow2'),
    POD_NAME: 'loco-emulator-3',
    ...extra,
  });
}

async function podInit(dir: string, extra: Record<string, string> = {}, args: string[] = []): Promise<Result> {
  const out = await cliOk(['pod-init', '--json', ...args], { env: podEnv(dir, extra) });
  return JSON.parse(out) as Result;
}

async function checkClean(file: string): Promise<void> {
  await runTool('qemu-img', ['check', file]);
}

beforeAll(async () => {
  s = await startTestServer();
  work = mkdtempSync(join(tmpdir(), 'snapyard-podinit-'));
  img.base = await makeBaseImage(work);
  img.games = await makeVariant(work, img.base, 'games');
  img.games2 = await makeVariant(work, img.base, 'games2', standardVariantEdits(123));
  for (const [tag, f] of [['win98-base', img.base], ['win98-games', img.games], ['win98-games-v2', img.games2]] as const) {
    await cliOk(['push', `loco/win98:${tag}`, f, '--registry', s.url, '--cache', join(work, 'push-cache')]);
  }
}, 180_000);

afterAll(async () => {
  await s?.stop();
});

describe('pod-init', () => {
  test('a variant over a base already on the node: DISK as an overlay over it, the instance overlay over DISK, both clean and guest-identical', async () => {
    const dir = join(work, 'node1');
    const b = await podInit(dir, { SNAPSHOT_TAG: 'win98-base', SNAPSHOT_BRANCH: 'base' });
    expect(b).toMatchObject({ action: 'downloaded', snapshot: join(dir, 'base', 'base.qcow2'), snapshotForm: 'full', overlay: join(dir, 'base', 'win98_instance_3.qcow2'), overlayAction: 'created' });
    expect(await guestContentEqual(b.overlay, img.base)).toBe(true);
    const g = await podInit(dir, { SNAPSHOT_TAG: 'win98-games' });
    expect(g).toMatchObject({ action: 'downloaded', snapshot: join(dir, 'win98.qcow2'), snapshotForm: 'overlay', overlay: join(dir, 'win98_instance_3.qcow2'), overlayAction: 'created' });
    // Only the clusters that differ travel, and DISK names its base by absolute path.
    expect(g.bytesDownloaded).toBeLessThan(b.bytesDownloaded / 2);
    expect((await qemuInfo(g.snapshot)).backingFilename).toBe(join(dir, 'base', 'base.qcow2'));
    expect((await qemuInfo(g.overlay)).backingFilename).toBe(join(dir, 'win98.qcow2'));
    for (const f of [g.snapshot, g.overlay, b.snapshot, b.overlay]) await checkClean(f);
    expect(await guestContentEqual(g.overlay, img.games)).toBe(true);
    await runTool('qemu-img', ['compare', g.overlay, img.games]);

    // A restart with everything present downloads nothing and keeps the instance overlay.
    await runTool('qemu-io', ['-c', 'write -P 0x77 1M 64k', g.overlay]);
    const again = await podInit(dir, { SNAPSHOT_TAG: 'win98-games' });
    expect(again).toMatchObject({ action: 'reused', overlayAction: 'reused', bytesDownloaded: 0 });
    const { stdout } = await runTool('qemu-io', ['-c', 'read -P 0x77 1M 64k', g.overlay]);
    expect(stdout).not.toMatch(/Pattern verification failed/);
  }, 180_000);

  test('eight pods starting at once on one directory: one download, eight clean instance overlays', async () => {
    const dir = join(work, 'node8');
    const runs = await Promise.all(
      Array.from({ length: 8 }, (_, i) => cliOk(['pod-init', '--json'], { env: podEnv(dir, { SNAPSHOT_TAG: 'win98-games', POD_NAME: `loco-emulator-${i}` }) })),
    );
    const rs = runs.map((o) => JSON.parse(o) as Result);
    expect(rs.filter((r) => r.action === 'downloaded')).toHaveLength(1);
    expect(rs.filter((r) => r.action === 'reused')).toHaveLength(7);
    expect(new Set(rs.map((r) => r.overlay)).size).toBe(8);
    for (const r of rs) {
      await checkClean(r.overlay);
      expect(await guestContentEqual(r.overlay, img.games)).toBe(true);
    }
    expect(existsSync(join(dir, 'win98.qcow2.lock'))).toBe(false);
  }, 180_000);

  test('a new version under the tag: the snapshot is updated; a persistent overlay over the old one is refused (exit 3) until reset', async () => {
    const dir = join(work, 'node-update');
    await podInit(dir, { SNAPSHOT_TAG: 'win98-games' });
    await cliOk(['tag', 'loco/win98:win98-games-v2', 'win98-games', '--registry', s.url]);
    try {
      const r = await runCli(['pod-init', '--json'], { env: podEnv(dir, { SNAPSHOT_TAG: 'win98-games' }) });
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/^snapyard: CONFLICT: the persistent instance overlay .*win98_instance_3\.qcow2 was made over .*SNAPSHOT_RESET=true/);
      const reset = await podInit(dir, { SNAPSHOT_TAG: 'win98-games', SNAPSHOT_RESET: 'true' });
      expect(reset).toMatchObject({ action: 'reused', overlayAction: 'recreated' });
      await checkClean(reset.overlay);
      expect(await guestContentEqual(reset.overlay, img.games2)).toBe(true);
    } finally {
      await cliOk(['rollback', 'loco/win98:win98-games', '--registry', s.url]);
    }
  }, 180_000);

  test('ephemeral mode recreates the instance overlay every start; --flags override the environment', async () => {
    const dir = join(work, 'node-eph');
    const a = await podInit(dir, { SNAPSHOT_TAG: 'win98-base', SNAPSHOT_MODE: 'ephemeral' });
    await runTool('qemu-io', ['-c', 'write -P 0x55 2M 64k', a.overlay]);
    const b = await podInit(dir, { SNAPSHOT_TAG: 'win98-base', SNAPSHOT_MODE: 'ephemeral' });
    expect(b.overlayAction).toBe('recreated');
    expect(await guestContentEqual(b.overlay, img.base)).toBe(true);
    const c = await podInit(dir, { SNAPSHOT_TAG: 'win98-base' }, ['--pod-name', 'other-7', '--tag', 'win98-games-v2']);
    expect(c.overlay).toBe(join(dir, 'win98_instance_7.qcow2'));
    expect(await guestContentEqual(c.overlay, img.games2)).toBe(true);
  }, 180_000);

  test('SNAPSHOT_PARENT_DISK: the instance overlay builds on an explicit parent, recorded by digest', async () => {
    const dir = join(work, 'node-parent');
    const parent = join(work, 'explicit-parent.qcow2');
    copyFileSync(img.games2, parent);
    const r = await podInit(dir, { SNAPSHOT_TAG: 'win98-base', SNAPSHOT_PARENT_DISK: parent });
    expect((await qemuInfo(r.overlay)).backingFilename).toBe(parent);
    expect(await guestContentEqual(r.overlay, img.games2)).toBe(true);
    expect((await podInit(dir, { SNAPSHOT_TAG: 'win98-base', SNAPSHOT_PARENT_DISK: parent })).overlayAction).toBe('reused');
    await runTool('qemu-io', ['-c', 'write -P 0x11 0 64k', parent]);
    const changed = await runCli(['pod-init', '--json'], { env: podEnv(dir, { SNAPSHOT_TAG: 'win98-base', SNAPSHOT_PARENT_DISK: parent }) });
    expect(changed.code).toBe(3);
  }, 180_000);

  test('nothing to do without USE_PREBUILT_SNAPSHOT; a registry that is down: the snapshot on disk is used; a base deleted under an overlay snapshot: fetched again', async () => {
    const skipped = JSON.parse(await cliOk(['pod-init', '--json'], { env: podEnv(join(work, 'none'), { USE_PREBUILT_SNAPSHOT: 'false' }) })) as Result;
    expect(skipped.action).toBe('skipped');
    expect(existsSync(join(work, 'none'))).toBe(false);

    const dir = join(work, 'node-down');
    await podInit(dir, { SNAPSHOT_TAG: 'win98-base', SNAPSHOT_BRANCH: 'base' });
    const g = await podInit(dir, { SNAPSHOT_TAG: 'win98-games' });
    expect(g.snapshotForm).toBe('overlay');
    const down = JSON.parse(await cliOk(['pod-init', '--json'], { env: podEnv(dir, { SNAPSHOT_TAG: 'win98-games', SNAPSHOT_REGISTRY: '127.0.0.1:9/loco/win98' }) })) as Result;
    expect(down).toMatchObject({ action: 'reused', offline: true, overlayAction: 'reused' });

    rmSync(join(dir, 'base', 'base.qcow2'));
    // The snapshot (an overlay whose base is gone) is made whole again; it holds the same image, so the
    // persistent instance overlay over it stays good.
    const r = await podInit(dir, { SNAPSHOT_TAG: 'win98-games' });
    expect(r).toMatchObject({ action: 'updated', snapshotForm: 'full', overlayAction: 'reused' });
    await checkClean(r.snapshot);
    expect(await guestContentEqual(r.overlay, img.games)).toBe(true);
    expect(readFileSync(r.snapshot).equals(readFileSync(img.games))).toBe(true);
  }, 180_000);

  test('bad settings are one clear line and exit 2', async () => {
    for (const [env, msg] of [
      [{ SNAPSHOT_MODE: 'sometimes' }, /SNAPSHOT_MODE must be persistent or ephemeral/],
      [{ SNAPSHOT_TAG: 'bad tag!' }, /SNAPSHOT_TAG "bad tag!" is not a tag/],
      [{ SNAPSHOT_BRANCH: '../escape' }, /SNAPSHOT_BRANCH "..\/escape" must be a plain name/],
    ] as const) {
      const r = await runCli(['pod-init'], { env: podEnv(join(work, 'bad'), env) });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
  });
});

/**
 * VM state (issue 10): internal snapshots (qemu `savevm`) survive pod-init.
 * The qcow2 writer writes snapshot tables qemu reads (`qemu-img check`
 * clean, `qemu-img snapshot -l`, each snapshot's disk view byte-exact); and
 * pod-init carries the snapshots of DISK into the instance overlay, so a
 * real qemu-system-i386 (TCG) booted with `-loadvm NAME` on the overlay
 * continues a counting boot-sector guest from where it was saved. An overlay
 * pull (DISK over a base the node holds, and `snapyard pull --overlay`)
 * carries the target's snapshots into the overlay it writes.
 */
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import { Qcow2Writer } from '../storage/qcow2/writer.js';
import { carrySnapshots } from '../client/overlay-snapshots.js';
import { CounterVm, countsIn, makeCounterImage } from './helpers/bootsector.js';
import { cleanEnv, cliOk } from './helpers/cli.js';
import { runTool } from './helpers/qcow2-fixtures.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-vmstate-');
const KiB = 1024;
const MiB = 1024 * KiB;

/** The guest bytes of one internal snapshot (qemu-img convert -l), as a raw file's contents. */
async function snapshotView(image: string, name: string, dir: string): Promise<Buffer> {
  const out = join(dir, `${name}-${Math.random().toString(36).slice(2)}.raw`);
  await runTool('qemu-img', ['convert', '-l', `snapshot.name=${name}`, '-O', 'raw', image, out]);
  return readFileSync(out);
}

async function snapshotList(image: string): Promise<string> {
  return (await runTool('qemu-img', ['snapshot', '-l', image])).stdout;
}

describe('qcow2 writer: internal snapshots', () => {
  test('a snapshot table with VM state and disk views qemu reads: check clean, listed, each view byte-exact', async () => {
    const dir = tmp();
    const path = join(dir, 'snap.qcow2');
    const size = 3 * MiB + 512; // a partial last cluster
    const w = await Qcow2Writer.create(path, { virtualSize: size });
    await w.writeData(0, Buffer.alloc(64 * KiB, 0x11));
    await w.writeData(size - 512, Buffer.alloc(512, 0x12));
    const vm = Buffer.alloc(300 * KiB + 7);
    for (let i = 0; i < vm.length; i++) vm[i] = (i * 7) & 0xff;
    w.beginSnapshot({ id: '1', name: 'booted', vmStateSize: vm.length, dateSec: 1_700_000_000, dateNsec: 42, vmClockNsec: 1_234_567_890n });
    await w.writeData(64 * KiB, Buffer.alloc(64 * KiB, 0x21));
    await w.writeZeros(2 * MiB, 64 * KiB);
    await w.writeData(w.vmStateOffset, vm);
    // Nothing may land between the disk's end and the VM state.
    await expect(w.writeData(w.vmStateOffset - 64 * KiB, Buffer.alloc(64 * KiB))).rejects.toThrow(/between the disk's end and the VM state/);
    expect(() => w.beginSnapshot({ id: '2', name: 'booted', vmStateSize: 0, dateSec: 0, dateNsec: 0, vmClockNsec: 0n })).toThrow(/already in the image/);
    w.beginSnapshot({ id: '2', name: 'disk-only', vmStateSize: 0, dateSec: 1_700_000_100, dateNsec: 0, vmClockNsec: 0n });
    await w.writeData(size - 512, Buffer.alloc(512, 0x22));
    await w.finish();

    await runTool('qemu-img', ['check', path]);
    const list = await snapshotList(path);
    expect(list).toMatch(/^1\s+booted\s+300 KiB\s+2023-11-14 \d\d:13:20\s+00:00:01\.234/m);
    expect(list).toMatch(/^2\s+disk-only\s+0 B/m);

    const img = Qcow2Image.open(path);
    try {
      expect(img.snapshots.map((s) => [s.id, s.name, s.vmStateSize, s.virtualSize, s.vmClockNsec])).toEqual([
        ['1', 'booted', vm.length, size, 1_234_567_890n],
        ['2', 'disk-only', 0, size, 0n],
      ]);
    } finally {
      img.close();
    }
    // A snapshot's view holds only what was written into it (no backing file: the rest reads zeros).
    const booted = await snapshotView(path, 'booted', dir);
    const want = Buffer.alloc(size);
    want.fill(0x21, 64 * KiB, 128 * KiB);
    expect(booted.equals(want)).toBe(true);
    const diskOnly = await snapshotView(path, 'disk-only', dir);
    want.fill(0);
    want.fill(0x22, size - 512);
    expect(diskOnly.equals(want)).toBe(true);
    // The active view is untouched by the snapshots.
    const active = join(dir, 'active.raw');
    await runTool('qemu-img', ['convert', '-O', 'raw', path, active]);
    want.fill(0);
    want.fill(0x11, 0, 64 * KiB);
    want.fill(0x12, size - 512);
    expect(readFileSync(active).equals(want)).toBe(true);
  });
});

describe('carrySnapshots', () => {
  test('an image with extended L2 entries: the overlay is still made, its snapshots reported as not carried', async () => {
    const dir = tmp();
    const parent = join(dir, 'ext.qcow2');
    await runTool('qemu-img', ['create', '-f', 'qcow2', '-o', 'extended_l2=on', parent, '4M']);
    await runTool('qemu-img', ['snapshot', '-c', 'disk1', parent]);
    const overlay = join(dir, 'overlay.qcow2');
    const w = await Qcow2Writer.create(overlay, { virtualSize: 4 * MiB, backingFile: parent, backingFormat: 'qcow2' });
    const r = await carrySnapshots(parent, w);
    await w.finish();
    expect(r).toEqual({ carried: [], skipped: [{ name: 'disk1', reason: 'the image uses extended L2 entries' }] });
    await runTool('qemu-img', ['check', overlay]);
  });
});

describe('pod-init carries VM state into the instance overlay (real qemu-system-i386)', () => {
  let s: TestServer;
  let work: string;
  let image: string;
  let lastSaved = 0;
  let savedView: Buffer;

  beforeAll(async () => {
    s = await startTestServer();
    work = tmp();
    image = join(work, 'counter.qcow2');
    await makeCounterImage(image, 4);
    // The same disk before the VM ran: a base the snapshot can be pulled over as an overlay.
    copyFileSync(image, join(work, 'base.qcow2'));
    // Disk data the snapshot sees and the active view later does not.
    await runTool('qemu-io', ['-c', 'write -P 0x11 2M 64k', image]);
    const vm = CounterVm.start(image, work, 'save');
    try {
      await vm.waitForCounts(4);
      await vm.monitor('stop');
      lastSaved = Math.max(...countsIn(vm.serialFile));
      const out = await vm.monitor('savevm counting');
      expect(out).not.toMatch(/error/i);
    } finally {
      await vm.stop();
    }
    // After the snapshot the disk moves on: the snapshot's view now differs from the active one.
    await runTool('qemu-io', ['-c', 'write -P 0x22 2M 64k', '-c', 'write -P 0x33 3M 64k', image]);
    savedView = await snapshotView(image, 'counting', work);
    await cliOk(['push', 'loco/counter:v1', image, '--registry', s.url, '--cache', join(work, 'push-cache')]);
    await cliOk(['push', 'loco/counter:base', join(work, 'base.qcow2'), '--registry', s.url, '--cache', join(work, 'push-cache')]);
  }, 120_000);

  const podEnv = (dir: string, tag: string, extra: Record<string, string> = {}) =>
    cleanEnv({
      USE_PREBUILT_SNAPSHOT: 'true',
      SNAPSHOT_REGISTRY: `${s.host}/loco/counter`,
      SNAPSHOT_TAG: tag,
      SNAPYARD_INSECURE: 'true',
      SNAPSHOT_DIR: dir,
      DISK: join(dir, 'win98.qcow2'),
      POD_NAME: 'loco-emulator-1',
      SNAPYARD_CACHE: join(work, 'node-cache'),
      ...extra,
    });

  /** Boots `image` with -loadvm and checks the count continues from the saved one (a fresh boot would start at 1). */
  async function loadvmContinues(image: string): Promise<void> {
    const vm = CounterVm.start(image, work, 'load', 'counting');
    try {
      const counts = await vm.waitForCounts(2);
      expect(counts[0]).toBeGreaterThanOrEqual(lastSaved);
      expect(counts[0]).toBeLessThanOrEqual(lastSaved + 1);
      expect(counts[1]).toBe(counts[0]! + 1);
    } finally {
      await vm.stop();
    }
  }

  afterAll(async () => {
    await s?.stop();
  });

  test('the instance overlay lists the snapshot, holds its disk view, and -loadvm continues the count', async () => {
    const dir = join(work, 'node');
    const r = JSON.parse(await cliOk(['pod-init', '--json'], { env: podEnv(dir, 'v1') })) as { overlay: string; snapshot: string; overlayAction: string };
    expect(r.overlayAction).toBe('created');
    await runTool('qemu-img', ['check', r.overlay]);
    expect(await snapshotList(r.overlay)).toMatch(/^1\s+counting\s+\d/m);
    const sidecar = JSON.parse(readFileSync(`${r.overlay}.snapyard.json`, 'utf8')) as { snapshots?: string[] };
    expect(sidecar.snapshots).toEqual(['counting']);
    // The snapshot's disk view through the overlay (its own clusters + the parent's) is the saved one.
    expect((await snapshotView(r.overlay, 'counting', work)).equals(savedView)).toBe(true);
    // Only the clusters that differ from the parent are stored: 2M (0x11 over 0x22) and 3M (zeros over 0x33).
    const stored = (await runTool('qemu-img', ['info', '--output=json', r.overlay])).stdout;
    expect(JSON.parse(stored)['actual-size']).toBeLessThan(4 * MiB);

    await loadvmContinues(r.overlay);
    // The parent (DISK) is untouched by the VM: qemu wrote to the overlay only.
    await runTool('qemu-img', ['check', r.snapshot]);
  }, 120_000);

  test('over a base on the node, DISK is an overlay that carries the snapshot too: listed on DISK and the instance overlay, its view exact, -loadvm continues the count', async () => {
    const dir = join(work, 'node-over-base');
    const b = JSON.parse(await cliOk(['pod-init', '--json'], { env: podEnv(dir, 'base', { SNAPSHOT_BRANCH: 'base' }) })) as { snapshot: string };
    const r = JSON.parse(await cliOk(['pod-init', '--json'], { env: podEnv(dir, 'v1') })) as { overlay: string; snapshot: string; snapshotForm: string };
    expect(r.snapshotForm).toBe('overlay');
    const disk = JSON.parse((await runTool('qemu-img', ['info', '--output=json', r.snapshot])).stdout);
    expect(disk['backing-filename']).toBe(b.snapshot);
    // DISK holds only what differs from the base: the active view's clusters, the snapshot's and its VM state.
    expect(disk['actual-size']).toBeLessThan(readFileSync(image).length);
    for (const f of [r.snapshot, r.overlay]) {
      await runTool('qemu-img', ['check', f]);
      expect(await snapshotList(f)).toMatch(/^1\s+counting\s+\d/m);
      expect((await snapshotView(f, 'counting', work)).equals(savedView)).toBe(true);
    }
    await runTool('qemu-img', ['compare', r.snapshot, image]);
    await loadvmContinues(r.overlay);
    // No temporary full image is left beside DISK.
    expect(readdirSync(dir).filter((f) => f.includes('snapyard-'))).toEqual([]);
  }, 120_000);

  test('snapyard pull --overlay of the image carries the snapshot and -loadvm on the overlay continues the count', async () => {
    const out = join(work, 'pulled-overlay.qcow2');
    const sum = JSON.parse(await cliOk(['pull', 'loco/counter:v1', '--overlay', '--base', join(work, 'base.qcow2'), '-o', out, '--json', '--registry', s.url, '--cache', join(work, 'pull-cache')])) as { snapshots?: string[] };
    expect(sum.snapshots).toEqual(['counting']);
    await runTool('qemu-img', ['check', out]);
    expect((await snapshotView(out, 'counting', work)).equals(savedView)).toBe(true);
    await loadvmContinues(out);
  }, 120_000);
});

/**
 * A real qemu-system-i386 (TCG) boots a tiny boot-sector guest (it counts on
 * its serial port; test/helpers/bootsector.ts) from a snapshot mounted
 * lazily with `snapyard mount --overlay`: the disk is the qcow2 overlay over
 * the NBD export, the boot sector comes over the network on first read,
 * and writes made through QEMU stay in the overlay.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { CounterVm, makeCounterImage } from './helpers/bootsector.js';
import { cliOk } from './helpers/cli.js';
import { compareExport } from './helpers/mount-fixture.js';
import { startMount } from './helpers/mount-process.js';
import { runTool } from './helpers/qcow2-fixtures.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-mount-boot-');
let s: TestServer;
let image: string;

beforeAll(async () => {
  s = await startTestServer();
  const work = tmp();
  image = join(work, 'counter.qcow2');
  await makeCounterImage(image, 4);
  await cliOk(['push', 'loco/counter:boot', image, '--registry', s.url, '--cache', join(work, 'push-cache')]);
}, 120_000);

afterAll(async () => {
  await s?.stop();
});

test('qemu-system-i386 boots the guest from a lazy mount through its overlay; a write through QEMU lands in the overlay, the export is unchanged', async () => {
  const dir = tmp();
  const overlay = join(dir, 'instance.qcow2');
  const m = await startMount('loco/counter:boot', join(dir, 'nbd.sock'), ['--registry', s.url, '--cache', join(dir, 'cache'), '--prefetch-rate', '0', '--overlay', overlay]);
  try {
    const vm = CounterVm.start(overlay, dir, 'lazy');
    try {
      const counts = await vm.waitForCounts(3, 60_000);
      // A fresh boot counts from 1 (the first line may be lost in the BIOS's own serial output).
      expect(counts[0]).toBeLessThanOrEqual(2);
      expect(counts[2]).toBe(counts[0]! + 2);
      const out = await vm.monitor('qemu-io ide0-hd0 "write -P 0x42 1M 64k"');
      expect(out).not.toMatch(/error|failed/i);
    } finally {
      await vm.stop();
    }
    await runTool('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x42 1M 64k', overlay]);
    await compareExport(m.url(), image);
  } finally {
    const stats = await m.stop();
    expect(stats.chunks).toBeGreaterThan(0); // the boot sector came over the network
  }
}, 120_000);

/**
 * The NBD server's bounds (client/nbd/server.ts): reads in flight per
 * connection, connections, the handshake timeout, and a failing source. In
 * process (NbdServer) where a limit is set lower than nbd-serve's defaults.
 */
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { NbdServer } from '../client/nbd/server.js';
import { openQcow2Source, type BlockSource } from '../client/nbd/source.js';
import { CMD, RawNbdClient, startNbdServe } from './helpers/nbd-client.js';
import { runTool } from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const MiB = 1024 * 1024;
const tmp = tempDirs('snapyard-nbd-limits-');

describe('NBD server limits', () => {
  let dir: string;
  let image: string;
  let guest: Buffer;

  beforeAll(async () => {
    dir = tmp();
    image = join(dir, 'disk.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
    await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x41 0 5M', '-c', 'write -q -P 0x42 6M 3M', '-c', 'write -q -P 0x43 9M 3M', image]);
    await runTool('qemu-img', ['convert', '-O', 'raw', image, join(dir, 'disk.raw')]);
    guest = await readFile(join(dir, 'disk.raw'));
  });

  it('bounds the reads running at once on a connection (count and bytes), however many a client sends', async () => {
    const inner = openQcow2Source(image);
    const pending: Array<() => void> = [];
    let started = 0;
    let most = 0;
    const total = 39;
    // The real source, its reads held until three run at once (or the last one started); more than three at once fails.
    const gated: BlockSource = {
      size: inner.size,
      read: async (offset, length) => {
        started++;
        await new Promise<void>((resolve) => {
          pending.push(resolve);
          most = Math.max(most, pending.length);
          // Released a macrotask later: a server taking a fourth meanwhile would be seen.
          if (pending.length === 3 || started === total) setImmediate(() => pending.splice(0).forEach((p) => p()));
        });
        return inner.read(offset, length);
      },
    };
    const server = new NbdServer({ exports: new Map([['', gated]]), maxInFlight: 8, maxInFlightBytes: MiB });
    const sock = join(dir, 'gated.sock');
    await server.listen(sock);
    try {
      const c = await RawNbdClient.connect(sock);
      await c.open('');
      for (let i = 0; i < total; i++) c.request(CMD.READ, BigInt(i), i * 300_000, 300_000);
      const seen = new Set<bigint>();
      for (let i = 0; i < total; i++) {
        const r = await c.reply(300_000);
        expect(r.error).toBe(0);
        const at = Number(r.handle) * 300_000;
        expect(r.payload.equals(guest.subarray(at, at + 300_000))).toBe(true);
        seen.add(r.handle);
      }
      expect(seen.size).toBe(total);
      expect(most).toBe(3); // 3 x 300 000 bytes fit in 1 MiB, a fourth does not
      c.close();
    } finally {
      await server.close();
      inner.close?.();
    }
  });

  it('a source failure is an I/O error for that read, never zeros, and the export goes on serving', async () => {
    const img = join(dir, 'corruptible.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', img, '64M']);
    await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x31 1M 64k', '-c', 'write -q -P 0x32 2M 64k', img]);
    const s = await startNbdServe(img, join(dir, 'corruptible.sock'));
    try {
      await runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x31 1M 64k', s.url()]);
      // Guest cluster 16 (1 MiB): its L2 entry now points one sector off, not cluster aligned (QCOW2_INVALID on read).
      const fh = await open(img, 'r+');
      try {
        const hdr = Buffer.alloc(48);
        await fh.read(hdr, 0, 48, 0);
        const l1 = Number(hdr.readBigUInt64BE(40));
        const e = Buffer.alloc(8);
        await fh.read(e, 0, 8, l1);
        const l2 = Number(e.readBigUInt64BE(0) & 0x00fffffffffffe00n);
        await fh.read(e, 0, 8, l2 + 16 * 8);
        e.writeBigUInt64BE(e.readBigUInt64BE(0) + 512n);
        await fh.write(e, 0, 8, l2 + 16 * 8);
      } finally {
        await fh.close();
      }
      await expect(runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read 1M 64k', s.url()])).rejects.toThrow(/Input\/output error/);
      const c = await RawNbdClient.connect(join(dir, 'corruptible.sock'));
      await c.open('');
      c.request(CMD.READ, 1n, MiB, 4096);
      expect((await c.reply(4096)).error).toBe(5); // EIO, simple reply without data
      c.request(CMD.READ, 2n, 2 * MiB, 4096);
      const ok = await c.reply(4096);
      expect(ok.error).toBe(0);
      expect(ok.payload.equals(Buffer.alloc(4096, 0x32))).toBe(true);
      c.close();
      await runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0x32 2M 64k', s.url()]);
      expect(s.stderr()).toMatch(/not cluster aligned/);
    } finally {
      await s.stop();
    }
  });

  it('bounds connections: one past maxConnections is closed, a handshake left idle is cut off, a connection in transmission is not', async () => {
    const source = openQcow2Source(image);
    const server = new NbdServer({ exports: new Map([['', source]]), maxConnections: 2, handshakeTimeoutMs: 2000 });
    const sock = join(dir, 'limits.sock');
    await server.listen(sock);
    try {
      const b = await RawNbdClient.connect(sock);
      await b.open('');
      const a = await RawNbdClient.connect(sock);
      await a.greet(); // and then nothing
      const c = await RawNbdClient.connect(sock);
      await c.closed; // the third
      await a.closed; // the idle handshake
      // b has been idle in transmission longer than the handshake timeout: still served.
      b.request(CMD.READ, 1n, 0, 4096);
      const r = await b.reply(4096);
      expect(r.error).toBe(0);
      expect(r.payload.equals(guest.subarray(0, 4096))).toBe(true);
      b.close();
    } finally {
      await server.close();
      source.close?.();
    }
  });
});

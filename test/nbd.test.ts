/**
 * `snapyard nbd-serve` (client/nbd/): a read-only NBD export of a qcow2's
 * guest view, checked with the real qemu tools over a unix socket, and with a
 * raw client for what qemu never sends.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeBaseImage, makeOverlay, runTool } from './helpers/qcow2-fixtures.js';
import { CMD, OPT, RawNbdClient, startNbdServe, type NbdServeProcess } from './helpers/nbd-client.js';
import { runCli } from './helpers/cli.js';
import { tempDirs } from './helpers/tmp.js';

const MiB = 1024 * 1024;
const tmp = tempDirs('snapyard-nbd-');

interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

async function map(args: string[]): Promise<MapEntry[]> {
  return JSON.parse((await runTool('qemu-img', ['map', '--output=json', ...args])).stdout) as MapEntry[];
}

/** The byte ranges a map calls data, merged. */
function dataRanges(m: MapEntry[]): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const e of m) {
    if (!e.data) continue;
    const last = out.at(-1);
    if (last && last[1] === e.start) last[1] += e.length;
    else out.push([e.start, e.start + e.length]);
  }
  return out;
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex');
}

async function guestBytes(image: string, dir: string, name: string): Promise<Buffer> {
  const raw = join(dir, `${name}.raw`);
  await runTool('qemu-img', ['convert', '-O', 'raw', image, raw]);
  return readFile(raw);
}

describe('snapyard nbd-serve', () => {
  let dir: string;
  let base: string;
  let overlay: string;
  let baseHash: string;
  let overlayHash: string;
  let guest: Buffer;
  let srv: NbdServeProcess;
  let over: NbdServeProcess;

  beforeAll(async () => {
    dir = tmp();
    base = await makeBaseImage(dir);
    overlay = await makeOverlay(dir, base, 'overlay');
    baseHash = await sha256(base);
    overlayHash = await sha256(overlay);
    guest = await guestBytes(overlay, dir, 'overlay');
    srv = await startNbdServe(base, join(dir, 'base.sock'), ['--name', 'win98:base-v1']);
    over = await startNbdServe(overlay, join(dir, 'over.sock'));
  });

  afterAll(async () => {
    await srv?.stop();
    await over?.stop();
  });

  it('serves the guest view: qemu-img compare finds the export identical to the qcow2 (a base, and an overlay through its backing chain)', async () => {
    const a = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', srv.url(), base]);
    expect(a.stdout).toContain('Images are identical');
    const b = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', over.url(), overlay]);
    expect(b.stdout).toContain('Images are identical');
  });

  it('qemu-io reads the patterns qemu-io wrote into the overlay, and the zeroed range, through the export', async () => {
    const r = await runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0xab 1M 256k', '-c', 'read -P 0xcd 20M 64k', '-c', 'read -P 0 8M 128k', '-c', 'read -P 0x5a 40000k 3k', over.url()]);
    expect(r.stdout).toContain('read 262144/262144 bytes at offset 1048576');
    expect(r.stdout).toContain('read 3072/3072 bytes at offset 40960000');
    expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|error/i);
    // The check can fail: the wrong pattern at 20M is noticed.
    await expect(runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0xab 20M 64k', over.url()])).rejects.toThrow(/Pattern verification failed/);
  });

  it('qemu-img map through the export shows data exactly where the image has it, zero holes elsewhere', async () => {
    for (const [url, image] of [[srv.url(), base], [over.url(), overlay]] as const) {
      const viaNbd = await map(['-f', 'raw', url]);
      const local = await map(['-f', 'qcow2', image]);
      expect(dataRanges(viaNbd)).toEqual(dataRanges(local));
      expect(viaNbd.filter((e) => !e.data).every((e) => e.zero)).toBe(true);
      const holes = viaNbd.filter((e) => !e.data).reduce((n, e) => n + e.length, 0);
      expect(holes).toBeGreaterThan(8 * MiB); // the fixture's free space and swap file
    }
  });

  it('serves the same data under a named export; an unknown name is refused', async () => {
    const r = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', srv.url('win98:base-v1'), base]);
    expect(r.stdout).toContain('Images are identical');
    await expect(runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 512', srv.url('win98:nope')])).rejects.toThrow(/export|not found|unknown|Requested/i);
    const c = await RawNbdClient.connect(join(dir, 'base.sock'));
    await c.greet();
    const names = (await c.option(OPT.LIST)).filter((x) => x.type === 2).map((x) => x.data.subarray(4).toString());
    expect(names.sort()).toEqual(['', 'win98:base-v1']);
    c.close();
  });

  it('a qcow2 overlay backed by the export keeps writes local and reads the rest through NBD', async () => {
    const top = join(dir, 'top.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', over.url(), '-F', 'raw', top]);
    await runTool('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 2M 64k', '-c', 'write -P 0x78 33M 4k', top]);
    const r = await runTool('qemu-io', ['-r', '-f', 'qcow2', '-c', 'read -P 0x77 2M 64k', '-c', 'read -P 0x78 33M 4k', '-c', 'read -P 0xab 1M 256k', '-c', 'read -P 0xcd 20M 64k', top]);
    expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|error/i);
    // Everything but the two writes is the served image's guest data.
    const seen = await guestBytes(top, dir, 'top');
    const expected = Buffer.from(guest);
    expected.fill(0x77, 2 * MiB, 2 * MiB + 64 * 1024);
    expected.fill(0x78, 33 * MiB, 33 * MiB + 4096);
    expect(seen.equals(expected)).toBe(true);
    expect(await sha256(overlay)).toBe(overlayHash);
    expect(await sha256(base)).toBe(baseHash);
  });

  it('refuses writes: qemu-io cannot open it writable, a raw NBD_CMD_WRITE gets EPERM and the connection goes on', async () => {
    await expect(runTool('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 4k', srv.url()])).rejects.toThrow(/Permission denied|read-only|read only/i);
    const c = await RawNbdClient.connect(join(dir, 'base.sock'));
    await c.open('');
    c.request(CMD.WRITE, 1n, 0, 4096, { payload: Buffer.alloc(4096, 0xee) });
    expect((await c.reply()).error).toBe(1);
    c.request(CMD.READ, 2n, 0, 4096);
    const r = await c.reply(4096);
    expect(r.error).toBe(0);
    expect(r.payload.equals((await readGuestOf(base, dir)).subarray(0, 4096))).toBe(true);
    c.close();
    expect(await sha256(base)).toBe(baseHash);
  });

  it('several qemu-io processes at once, and many reads in flight on one connection, each answered by handle', async () => {
    const runs = [0, 1, 2, 3].map((i) =>
      runTool('qemu-io', ['-r', '-f', 'raw', '-c', `read -P 0xab ${1024 + i * 64}k 64k`, '-c', 'read -P 0xcd 20M 64k', '-c', `read -v ${33 * 1024 + i * 48}k 512`, over.url()]),
    );
    for (const r of await Promise.all(runs)) expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|error/i);
    const c = await RawNbdClient.connect(join(dir, 'over.sock'));
    await c.open('', true);
    const asked = new Map<bigint, { offset: number; length: number }>();
    for (let i = 0; i < 40; i++) {
      const offset = ((i * 7919) % 60) * MiB + i * 513;
      asked.set(BigInt(1000 + i), { offset, length: 300_000 });
      c.request(CMD.READ, BigInt(1000 + i), offset, 300_000);
    }
    const got = await c.structuredReads(asked);
    expect(got.size).toBe(40);
    for (const [handle, { offset }] of asked) {
      const r = got.get(handle)!;
      expect(r.covered).toBe(300_000);
      expect(r.data.equals(guest.subarray(offset, offset + 300_000))).toBe(true);
    }
    // Zeros travel as holes: a read of the zeroed range is one OFFSET_HOLE chunk, a read across data and zeros both kinds.
    const m = await map(['-f', 'qcow2', overlay]);
    const edge = m.find((e, i) => i > 0 && !e.data && e.zero && m[i - 1]!.data)!.start; // data ends, zeros begin
    const ranges = new Map([[1n, { offset: 8 * MiB, length: 128 * 1024 }], [2n, { offset: edge - 4096, length: 8192 }]]);
    for (const [h, r] of ranges) c.request(CMD.READ, h, r.offset, r.length);
    const holes = await c.structuredReads(ranges);
    expect(holes.get(1n)!.types).toEqual([2]);
    expect(holes.get(2n)!.types).toEqual([1, 2]);
    expect(holes.get(2n)!.data.equals(guest.subarray(edge - 4096, edge + 4096))).toBe(true);
    c.request(CMD.DISC, 9n, 0, 0);
    await c.closed;
  });

  it('a hostile client gets errors or is cut off, and the server keeps serving others', async () => {
    const sock = join(dir, 'base.sock');
    const size = (await readGuestOf(base, dir)).byteLength;
    // Transmission errors: oversized read, past the end, zero length, block status never negotiated.
    const c = await RawNbdClient.connect(sock);
    expect(await c.open('', true)).toBe(BigInt(size));
    c.request(CMD.READ, 1n, 0, 64 * MiB);
    c.request(CMD.READ, 2n, size - 4096, 8192);
    c.request(CMD.READ, 3n, 2n ** 63n, 512);
    c.request(CMD.READ, 4n, 0, 0);
    c.request(CMD.BLOCK_STATUS, 5n, 0, 4096);
    const errors = new Map<bigint, number>();
    for (let i = 0; i < 5; i++) {
      const r = await c.reply();
      errors.set(r.handle, r.error);
    }
    expect([...errors.entries()].sort()).toEqual([[1n, 22], [2n, 22], [3n, 22], [4n, 22], [5n, 22]]);
    // Bad request magic: the connection is closed.
    c.request(CMD.READ, 6n, 0, 512, { magic: 0x12345678 });
    await c.closed;
    // Option haggling: an unknown option, an option too long to buffer (skipped), bad magic.
    const o = await RawNbdClient.connect(sock);
    await o.greet();
    expect((await o.option(99)).at(-1)!.type).toBe(2 ** 31 + 1); // NBD_REP_ERR_UNSUP
    expect((await o.option(OPT.STRUCTURED_REPLY, Buffer.alloc(4))).at(-1)!.type).toBe(2 ** 31 + 3); // ERR_INVALID
    o.sendOption(99, Buffer.alloc(200 * 1024), 200 * 1024);
    expect((await o.optionReply()).type).toBe(2 ** 31 + 9); // ERR_TOO_BIG
    o.sendOption(OPT.LIST, Buffer.alloc(0), 0, 0x1122334455667788n);
    await o.closed;
    // A greeting answered with unknown client flags: cut off.
    const f = await RawNbdClient.connect(sock);
    await f.reader.read(18);
    f.socket.write(Buffer.from([0, 0, 0, 0xff]));
    await f.closed;
    // Others are still served, and the server is still up.
    const r = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', srv.url(), base]);
    expect(r.stdout).toContain('Images are identical');
    expect(srv.child.exitCode).toBeNull();
  });

  it('serves a raw file as it is', async () => {
    const raw = join(dir, 'guest.raw');
    await runTool('qemu-img', ['convert', '-O', 'raw', overlay, raw]);
    const r = await startNbdServe(raw, join(dir, 'raw.sock'));
    try {
      const c = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', r.url(), raw]);
      expect(c.stdout).toContain('Images are identical');
      await runTool('qemu-io', ['-r', '-f', 'raw', '-c', 'read -P 0xcd 20M 64k', r.url()]);
    } finally {
      await r.stop();
    }
  });

  it('option haggling: INFO (export size, read-only flags, block sizes), meta contexts, unknown export, ABORT, EXPORT_NAME', async () => {
    const sock = join(dir, 'base.sock');
    const size = (await readGuestOf(base, dir)).byteLength;
    const named = (name: string, tail: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, name.length]), Buffer.from(name), tail]);
    const c = await RawNbdClient.connect(sock);
    expect(await c.greet()).toBe(3); // FIXED_NEWSTYLE | NO_ZEROES
    const info = await c.option(OPT.INFO, named('win98:base-v1', Buffer.from([0, 2, 0, 3, 0, 1]))); // BLOCK_SIZE, NAME
    expect(info.at(-1)!.type).toBe(1);
    const exp = info.find((r) => r.type === 3 && r.data.readUInt16BE(0) === 0)!.data;
    expect(Number(exp.readBigUInt64BE(2))).toBe(size);
    expect(exp.readUInt16BE(10)).toBe(1 | 2 | 4 | 256); // HAS_FLAGS | READ_ONLY | SEND_FLUSH | CAN_MULTI_CONN
    const bs = info.find((r) => r.type === 3 && r.data.readUInt16BE(0) === 3)!.data;
    expect([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)]).toEqual([1, 4096, 32 * MiB]);
    expect(info.find((r) => r.type === 3 && r.data.readUInt16BE(0) === 1)!.data.subarray(2).toString()).toBe('win98:base-v1');
    const list = await c.option(OPT.LIST_META_CONTEXT, named('', Buffer.alloc(4)));
    expect(list.map((r) => [r.type, r.data.subarray(4).toString()])).toEqual([[4, 'base:allocation'], [1, '']]);
    // SET_META_CONTEXT before STRUCTURED_REPLY is invalid; GO on an unknown export is refused, the connection goes on.
    expect((await c.option(OPT.SET_META_CONTEXT, named('', Buffer.alloc(4)))).at(-1)!.type).toBe(2 ** 31 + 3);
    expect((await c.option(OPT.GO, named('nope', Buffer.alloc(2)))).at(-1)!.type).toBe(2 ** 31 + 6); // ERR_UNKNOWN
    expect((await c.option(OPT.ABORT)).at(-1)!.type).toBe(1);
    await c.closed;
    // The oldstyle-in-newstyle NBD_OPT_EXPORT_NAME: size and flags, no zeroes (NO_ZEROES), then transmission.
    const e = await RawNbdClient.connect(sock);
    await e.greet();
    e.sendOption(OPT.EXPORT_NAME, Buffer.from('win98:base-v1'));
    const r = await e.reader.read(10);
    expect(Number(r.readBigUInt64BE(0))).toBe(size);
    e.request(CMD.READ, 7n, 512, 512);
    const reply = await e.reply(512);
    expect(reply.handle).toBe(7n);
    expect(reply.payload.equals((await readGuestOf(base, dir)).subarray(512, 1024))).toBe(true);
    e.close();
    // EXPORT_NAME of an unknown export: the server must hang up.
    const u = await RawNbdClient.connect(sock);
    await u.greet();
    u.sendOption(OPT.EXPORT_NAME, Buffer.from('nope'));
    await u.closed;
  });

  it('--socket: a stale socket (server killed -9) is replaced; a live one and a regular file are refused and left alone', async () => {
    const sock = join(dir, 'stale.sock');
    const first = await startNbdServe(base, sock);
    first.child.kill('SIGKILL');
    await first.stop();
    const second = await startNbdServe(base, sock);
    try {
      const live = await runCli(['nbd-serve', base, '--socket', sock]);
      expect(live.code).not.toBe(0);
      expect(live.stderr).toMatch(/another server is listening/);
      // The live server still serves.
      expect((await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', second.url(), base])).stdout).toContain('Images are identical');
    } finally {
      await second.stop();
    }
    const file = join(dir, 'not-a-socket');
    await writeFile(file, 'keep me');
    const r = await runCli(['nbd-serve', base, '--socket', file]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not a socket/);
    expect(await readFile(file, 'utf8')).toBe('keep me');
  });

  it('answers NBD_CMD_BLOCK_STATUS for base:allocation (hole|zero on unallocated clusters, data on written ones)', async () => {
    const q = Buffer.from('base:allocation');
    const d = Buffer.alloc(4 + 4 + 4 + q.byteLength); // export '' , one query
    d.writeUInt32BE(1, 4);
    d.writeUInt32BE(q.byteLength, 8);
    q.copy(d, 12);
    const g = await RawNbdClient.connect(join(dir, 'over.sock'));
    await g.greet();
    await g.option(OPT.STRUCTURED_REPLY);
    const set = await g.option(OPT.SET_META_CONTEXT, d);
    expect(set.map((x) => x.type)).toEqual([4, 1]); // META_CONTEXT, ACK
    expect(set[0]!.data.subarray(4).toString()).toBe('base:allocation');
    const name = Buffer.alloc(6);
    const go = await g.option(OPT.GO, name);
    expect(go.at(-1)!.type).toBe(1);
    // 1M..1M+256k was written (0xab), 8M..8M+128k zeroed.
    g.request(CMD.BLOCK_STATUS, 1n, 1 * MiB, 256 * 1024);
    g.request(CMD.BLOCK_STATUS, 2n, 8 * MiB, 128 * 1024);
    const replies = new Map<bigint, Buffer>();
    for (let i = 0; i < 2; i++) {
      const r = await g.reply();
      expect(r.type).toBe(5);
      replies.set(r.handle, r.payload);
    }
    const first = replies.get(1n)!;
    expect(first.readUInt32BE(0)).toBe(set[0]!.data.readUInt32BE(0));
    expect([first.readUInt32BE(4), first.readUInt32BE(8)]).toEqual([256 * 1024, 0]);
    const zero = replies.get(2n)!;
    expect([zero.readUInt32BE(4), zero.readUInt32BE(8)]).toEqual([128 * 1024, 3]);
    g.close();
  });
});

let guestCache: Buffer | undefined;
async function readGuestOf(image: string, dir: string): Promise<Buffer> {
  guestCache ??= await guestBytes(image, dir, 'base');
  return guestCache;
}

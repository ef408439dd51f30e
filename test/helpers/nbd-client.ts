/**
 * For NBD tests: `snapyard nbd-serve` as a child process, and a raw NBD
 * client that speaks the wire protocol byte by byte (so a test can also send
 * what qemu never would: bad magic, oversized reads, writes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { IHAVEOPT, NBD_MAGIC, OPT, REP, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from '../../client/nbd/protocol.js';
import { SocketReader } from '../../client/nbd/socket-reader.js';
import { BIN, cleanEnv } from './cli.js';

export interface NbdServeProcess {
  child: ChildProcess;
  url(name?: string): string;
  stderr(): string;
  stop(): Promise<void>;
}

/** Starts `snapyard nbd-serve FILE --socket SOCKET ARGS...` and waits until it listens. */
export function startNbdServe(file: string, socket: string, args: string[] = []): Promise<NbdServeProcess> {
  const child = spawn(process.execPath, [BIN, 'nbd-serve', file, '--socket', socket, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const proc: NbdServeProcess = {
    child,
    url: (name = '') => `nbd+unix:///${name}?socket=${socket}`,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  return new Promise((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(proc);
    });
    child.once('exit', (code) => reject(new Error(`nbd-serve exited ${code}: ${err.trim()}`)));
  });
}

// The constants are the server's own (client/nbd/protocol.ts); qemu's tools check them independently.
export { CMD, OPT } from '../../client/nbd/protocol.js';

export interface OptionReply {
  option: number;
  type: number;
  data: Buffer;
}

export interface Reply {
  /** Simple reply magic 0x67446698 or structured 0x668e33ef. */
  magic: number;
  handle: bigint;
  /** Simple: the error; structured: 0 unless an error chunk. */
  error: number;
  flags: number;
  type: number;
  /** Structured: the chunk's payload. */
  payload: Buffer;
}

export interface StructuredRead {
  data: Buffer;
  types: number[];
  covered: number;
  error: number;
}

export class RawNbdClient {
  readonly reader: SocketReader;
  readonly closed: Promise<void>;

  private constructor(readonly socket: Socket) {
    this.reader = new SocketReader(socket);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  static async connect(path: string): Promise<RawNbdClient> {
    const socket = connect(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    socket.on('error', () => {});
    return new RawNbdClient(socket);
  }

  /** Reads the greeting and sends the client flags (FIXED_NEWSTYLE | NO_ZEROES). */
  async greet(): Promise<number> {
    const g = await this.reader.read(18);
    if (g.readBigUInt64BE(0) !== NBD_MAGIC || g.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad greeting');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(3);
    this.socket.write(f);
    return g.readUInt16BE(16);
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0), length = data.byteLength, magic: bigint = IHAVEOPT): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(magic, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(length, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<OptionReply> {
    const h = await this.reader.read(20);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.reader.read(h.readUInt32BE(16)) };
  }

  /** Sends an option and collects its replies up to the ACK or an error. */
  async option(option: number, data?: Buffer): Promise<OptionReply[]> {
    this.sendOption(option, data);
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      out.push(r);
      if (r.type === REP.ACK || r.type >= 2 ** 31) return out;
    }
  }

  /** Greets, optionally negotiates structured replies, and enters transmission on export `name`. */
  async open(name = '', structured = false): Promise<bigint> {
    await this.greet();
    if (structured && (await this.option(OPT.STRUCTURED_REPLY)).at(-1)!.type !== REP.ACK) throw new Error('no structured replies');
    const n = Buffer.from(name);
    const d = Buffer.alloc(4 + n.byteLength + 2);
    d.writeUInt32BE(n.byteLength, 0);
    n.copy(d, 4);
    const replies = await this.option(OPT.GO, d);
    const info = replies.find((r) => r.type === 3 && r.data.readUInt16BE(0) === 0);
    if (!info) throw new Error(`GO failed: reply type 0x${replies.at(-1)!.type.toString(16)}`);
    return info.data.readBigUInt64BE(2);
  }

  request(type: number, handle: bigint, offset: number | bigint, length: number, opts: { flags?: number; payload?: Buffer; magic?: number } = {}): void {
    const b = Buffer.alloc(28);
    b.writeUInt32BE(opts.magic ?? REQUEST_MAGIC, 0);
    b.writeUInt16BE(opts.flags ?? 0, 4);
    b.writeUInt16BE(type, 6);
    b.writeBigUInt64BE(handle, 8);
    b.writeBigUInt64BE(BigInt(offset), 16);
    b.writeUInt32BE(length, 24);
    this.socket.write(opts.payload ? Buffer.concat([b, opts.payload]) : b);
  }

  /** The next reply; a simple one carries `dataLength` bytes when it succeeds. */
  async reply(dataLength = 0): Promise<Reply> {
    const magic = (await this.reader.read(4)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const h = await this.reader.read(12);
      const error = h.readUInt32BE(0);
      const payload = error === 0 ? await this.reader.read(dataLength) : Buffer.alloc(0);
      return { magic, handle: h.readBigUInt64BE(4), error, flags: 0, type: 0, payload };
    }
    if (magic !== STRUCTURED_REPLY_MAGIC) throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    const h = await this.reader.read(16);
    const payload = await this.reader.read(h.readUInt32BE(12));
    const type = h.readUInt16BE(2);
    const error = type >= 2 ** 15 ? payload.readUInt32BE(0) : 0;
    return { magic, handle: h.readBigUInt64BE(4), error, flags: h.readUInt16BE(0), type, payload };
  }

  /**
   * The structured replies to the reads in `asked` (handle -> range), chunks
   * of different replies possibly interleaved: each read's bytes (holes as
   * zeros), the chunk types it came in, and the bytes its chunks covered.
   * Throws on a chunk outside its request.
   */
  async structuredReads(asked: ReadonlyMap<bigint, { offset: number; length: number }>): Promise<Map<bigint, StructuredRead>> {
    const out = new Map<bigint, StructuredRead>();
    let done = 0;
    while (done < asked.size) {
      const r = await this.reply();
      const want = asked.get(r.handle);
      if (!want) throw new Error(`reply for unknown handle ${r.handle}`);
      let got = out.get(r.handle);
      if (!got) out.set(r.handle, (got = { data: Buffer.alloc(want.length), types: [], covered: 0, error: 0 }));
      got.types.push(r.type);
      if (r.type === 1 || r.type === 2) {
        const at = Number(r.payload.readBigUInt64BE(0));
        const len = r.type === 1 ? r.payload.byteLength - 8 : r.payload.readUInt32BE(8);
        if (at < want.offset || at + len > want.offset + want.length || len === 0) throw new Error(`chunk ${at} +${len} outside the read ${want.offset} +${want.length}`);
        if (r.type === 1) r.payload.copy(got.data, at - want.offset, 8);
        got.covered += len;
      } else if (r.error !== 0) got.error = r.error;
      if (r.flags & 1) done++;
    }
    return out;
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * The fixed newstyle handshake and option haggling of an NBD server: ends in
 * transmission (NBD_OPT_GO, NBD_OPT_EXPORT_NAME) or undefined (NBD_OPT_ABORT).
 * A protocol violation (bad magic, unknown client flags, too many options)
 * throws ProtocolViolation: the caller closes the connection.
 */
import type { Socket } from 'node:net';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  CLIENT_FLAGS_KNOWN,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  greeting,
  IHAVEOPT,
  INFO,
  infoBlockSize,
  infoExport,
  infoName,
  metaContextEntry,
  OPT,
  optionReply,
  REP,
  serverEntry,
  u16,
  u64,
} from './protocol.js';
import type { SocketReader } from './socket-reader.js';
import type { BlockSource } from './source.js';

export class ProtocolViolation extends Error {}

export interface HandshakeLimits {
  /** Largest option payload read; a longer one is skipped and answered NBD_REP_ERR_TOO_BIG. */
  maxOptionLength: number;
  /** Options one connection may send before transmission. */
  maxOptions: number;
  /** Largest read the server accepts (announced with NBD_INFO_BLOCK_SIZE). */
  maxRead: number;
}

export interface Negotiated {
  name: string;
  source: BlockSource;
  structured: boolean;
  /** base:allocation selected for this export (NBD_CMD_BLOCK_STATUS allowed). */
  allocation: boolean;
}

/** An export's transmission flags (every export is read-only). */
export type ExportFlags = number;

/** Thrown by the payload parser: answered NBD_REP_ERR_INVALID. */
class BadOption extends Error {}

/** Bounds-checked reads from an option's payload. */
class Cursor {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  u16(): number {
    this.need(2);
    return this.b.readUInt16BE((this.at += 2) - 2);
  }
  u32(): number {
    this.need(4);
    return this.b.readUInt32BE((this.at += 4) - 4);
  }
  string(n: number): string {
    this.need(n);
    return this.b.toString('utf8', this.at, (this.at += n));
  }
  end(): void {
    if (this.at !== this.b.byteLength) throw new BadOption('trailing bytes');
  }
  private need(n: number): void {
    if (this.at + n > this.b.byteLength) throw new BadOption('truncated');
  }
}

export async function handshake(
  socket: Socket,
  reader: SocketReader,
  exports: ReadonlyMap<string, BlockSource>,
  flags: ExportFlags,
  limits: HandshakeLimits,
): Promise<Negotiated | undefined> {
  socket.write(greeting());
  const clientFlags = (await reader.read(4)).readUInt32BE(0);
  if ((clientFlags & ~CLIENT_FLAGS_KNOWN) !== 0 || (clientFlags & FLAG_FIXED_NEWSTYLE) === 0) {
    throw new ProtocolViolation(`client flags 0x${clientFlags.toString(16)} not supported`);
  }
  const noZeroes = (clientFlags & FLAG_NO_ZEROES) !== 0;
  let structured = false;
  /** The export base:allocation was selected for (SET_META_CONTEXT), if any. */
  let allocationFor: string | undefined;
  const reply = (opt: number, type: number, data?: Buffer) => socket.write(optionReply(opt, type, data));

  for (let n = 0; n < limits.maxOptions; n++) {
    const head = await reader.read(16);
    if (head.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolViolation('bad option magic');
    const opt = head.readUInt32BE(8);
    const length = head.readUInt32BE(12);
    if (length > limits.maxOptionLength) {
      await reader.skip(length);
      reply(opt, REP.ERR_TOO_BIG);
      continue;
    }
    const data = await reader.read(length);
    try {
      switch (opt) {
        case OPT.EXPORT_NAME: {
          const name = data.toString('utf8');
          const source = exports.get(name);
          if (!source) throw new ProtocolViolation(`no export named ${JSON.stringify(name)}`);
          socket.write(Buffer.concat([u64(source.size), u16(flags), noZeroes ? Buffer.alloc(0) : Buffer.alloc(124)]));
          return { name, source, structured, allocation: allocationFor === name };
        }
        case OPT.ABORT:
          reply(opt, REP.ACK);
          return undefined;
        case OPT.LIST:
          if (length !== 0) throw new BadOption('NBD_OPT_LIST takes no data');
          for (const name of exports.keys()) reply(opt, REP.SERVER, serverEntry(name));
          reply(opt, REP.ACK);
          break;
        case OPT.STRUCTURED_REPLY:
          if (length !== 0) throw new BadOption('NBD_OPT_STRUCTURED_REPLY takes no data');
          structured = true;
          reply(opt, REP.ACK);
          break;
        case OPT.INFO:
        case OPT.GO: {
          const c = new Cursor(data);
          const name = c.string(c.u32());
          const wanted = new Set<number>();
          for (let i = c.u16(); i > 0; i--) wanted.add(c.u16());
          c.end();
          const source = exports.get(name);
          if (!source) {
            reply(opt, REP.ERR_UNKNOWN, Buffer.from(`no export named ${JSON.stringify(name)}`));
            break;
          }
          reply(opt, REP.INFO, infoExport(source.size, flags));
          if (wanted.has(INFO.NAME)) reply(opt, REP.INFO, infoName(name));
          if (wanted.has(INFO.BLOCK_SIZE)) reply(opt, REP.INFO, infoBlockSize(1, 4096, limits.maxRead));
          reply(opt, REP.ACK);
          if (opt === OPT.GO) return { name, source, structured, allocation: allocationFor === name };
          break;
        }
        case OPT.LIST_META_CONTEXT:
        case OPT.SET_META_CONTEXT: {
          const c = new Cursor(data);
          const name = c.string(c.u32());
          const queries: string[] = [];
          for (let i = c.u32(); i > 0; i--) queries.push(c.string(c.u32()));
          c.end();
          if (opt === OPT.SET_META_CONTEXT && !structured) throw new BadOption('SET_META_CONTEXT before STRUCTURED_REPLY');
          if (!exports.has(name)) {
            reply(opt, REP.ERR_UNKNOWN, Buffer.from(`no export named ${JSON.stringify(name)}`));
            break;
          }
          if (opt === OPT.LIST_META_CONTEXT) {
            if (queries.length === 0 || queries.some((q) => q === 'base:' || q === BASE_ALLOCATION)) {
              reply(opt, REP.META_CONTEXT, metaContextEntry(0, BASE_ALLOCATION));
            }
          } else {
            allocationFor = queries.includes(BASE_ALLOCATION) ? name : undefined;
            if (allocationFor !== undefined) reply(opt, REP.META_CONTEXT, metaContextEntry(BASE_ALLOCATION_ID, BASE_ALLOCATION));
          }
          reply(opt, REP.ACK);
          break;
        }
        default:
          reply(opt, REP.ERR_UNSUP);
      }
    } catch (e) {
      if (!(e instanceof BadOption)) throw e;
      reply(opt, REP.ERR_INVALID, Buffer.from(e.message));
    }
  }
  throw new ProtocolViolation(`more than ${limits.maxOptions} options`);
}

/**
 * NBD wire constants and encoders (the fixed newstyle protocol, as in
 * NetworkBlockDevice/nbd doc/proto.md). Only what a read-only server needs:
 * the handshake, option replies, requests and simple / structured replies.
 * All integers are big-endian.
 */

/** "NBDMAGIC", then "IHAVEOPT": the server's first 16 bytes. */
export const NBD_MAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (server) and client flags. */
export const FLAG_FIXED_NEWSTYLE = 1 << 0;
export const FLAG_NO_ZEROES = 1 << 1;
export const CLIENT_FLAGS_KNOWN = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES;

/** Transmission flags of an export. */
export const TFLAG_HAS_FLAGS = 1 << 0;
export const TFLAG_READ_ONLY = 1 << 1;
export const TFLAG_SEND_FLUSH = 1 << 2;
export const TFLAG_CAN_MULTI_CONN = 1 << 8;

export const OPT = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

const ERR = 2 ** 31;
export const REP = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERR + 1,
  ERR_POLICY: ERR + 2,
  ERR_INVALID: ERR + 3,
  ERR_UNKNOWN: ERR + 6,
  ERR_TOO_BIG: ERR + 9,
} as const;

export const INFO = { EXPORT: 0, NAME: 1, DESCRIPTION: 2, BLOCK_SIZE: 3 } as const;

export const CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
/** Command flags. */
export const CMD_FLAG_REQ_ONE = 1 << 3;

export const REPLY_FLAG_DONE = 1;
export const REPLY_TYPE = { NONE: 0, OFFSET_DATA: 1, OFFSET_HOLE: 2, BLOCK_STATUS: 5, ERROR: 2 ** 15 + 1 } as const;

/** errno values on the wire. */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_EINVAL = 22;
export const NBD_ENOTSUP = 95;

/** base:allocation flags. */
export const STATE_HOLE = 1;
export const STATE_ZERO = 2;
export const BASE_ALLOCATION = 'base:allocation';
/** The id the server gives base:allocation when a client selects it. */
export const BASE_ALLOCATION_ID = 1;

/** A transmission request's header. */
export const REQUEST_LENGTH = 28;
export interface Request {
  flags: number;
  type: number;
  handle: Buffer;
  offset: number;
  length: number;
}

export function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

export function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export function u64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

/** The server's greeting: magic, IHAVEOPT, handshake flags. */
export function greeting(): Buffer {
  return Buffer.concat([u64(NBD_MAGIC), u64(IHAVEOPT), u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)]);
}

export function optionReply(option: number, type: number, data: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([u64(OPTION_REPLY_MAGIC), u32(option), u32(type), u32(data.byteLength), data]);
}

/** NBD_INFO_EXPORT: size and transmission flags. */
export function infoExport(size: number, flags: number): Buffer {
  return Buffer.concat([u16(INFO.EXPORT), u64(size), u16(flags)]);
}

export function infoBlockSize(min: number, preferred: number, max: number): Buffer {
  return Buffer.concat([u16(INFO.BLOCK_SIZE), u32(min), u32(preferred), u32(max)]);
}

export function infoName(name: string): Buffer {
  return Buffer.concat([u16(INFO.NAME), Buffer.from(name, 'utf8')]);
}

/** NBD_REP_SERVER data: the export's name. */
export function serverEntry(name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  return Buffer.concat([u32(n.byteLength), n]);
}

export function metaContextEntry(id: number, name: string): Buffer {
  return Buffer.concat([u32(id), Buffer.from(name, 'utf8')]);
}

export function parseRequest(b: Buffer): Request | undefined {
  if (b.readUInt32BE(0) !== REQUEST_MAGIC) return undefined;
  return {
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    handle: Buffer.from(b.subarray(8, 16)),
    offset: Number(b.readBigUInt64BE(16)),
    length: b.readUInt32BE(24),
  };
}

export function simpleReply(handle: Buffer, error: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  handle.copy(b, 8);
  return b;
}

/** A structured reply chunk's 20-byte header. */
export function chunkHeader(handle: Buffer, flags: number, type: number, length: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  handle.copy(b, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

/** NBD_REPLY_TYPE_ERROR, the final chunk. */
export function errorChunk(handle: Buffer, error: number, message: string): Buffer[] {
  const msg = Buffer.from(message.slice(0, 200), 'utf8');
  return [chunkHeader(handle, REPLY_FLAG_DONE, REPLY_TYPE.ERROR, 6 + msg.byteLength), u32(error), u16(msg.byteLength), msg];
}

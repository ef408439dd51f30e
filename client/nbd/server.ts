/**
 * A read-only NBD server (fixed newstyle, NetworkBlockDevice/nbd
 * doc/proto.md) on a unix socket, serving block sources (source.ts) as
 * exports: '' is the default export (`nbd+unix:///?socket=PATH`), other
 * names are named exports (`nbd+unix:///NAME?socket=PATH`).
 *
 * Transmission: NBD_CMD_READ (simple or structured replies), NBD_CMD_DISC,
 * NBD_CMD_FLUSH (nothing to flush), NBD_CMD_BLOCK_STATUS for base:allocation
 * (zero ranges are NBD_STATE_HOLE|NBD_STATE_ZERO); writes, trims and write
 * zeroes get EPERM. Several requests of a connection run at once and are
 * answered as each completes (by handle).
 *
 * Bounded: a read longer than maxRead, a zero length or a range past the end
 * gets EINVAL; at most maxInFlight requests and maxInFlightBytes of reads per
 * connection run at once (the socket is not read meanwhile), and replies
 * queued on a slow client hold the next request back; option payloads over
 * 64 KiB are skipped, not buffered; at most maxConnections at once, and a
 * handshake not finished within handshakeTimeoutMs is cut off.
 * A protocol violation (bad magic, an unknown client flag) closes that
 * connection only.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { lstat, rm } from 'node:fs/promises';
import { isSnapyardError, SnapyardError } from '../../storage/errors.js';
import { handshake, ProtocolViolation, type Negotiated } from './handshake.js';
import {
  BASE_ALLOCATION_ID,
  chunkHeader,
  CMD,
  CMD_FLAG_REQ_ONE,
  errorChunk,
  NBD_EINVAL,
  NBD_EIO,
  NBD_EPERM,
  parseRequest,
  REPLY_FLAG_DONE,
  REPLY_TYPE,
  REQUEST_LENGTH,
  simpleReply,
  STATE_HOLE,
  STATE_ZERO,
  TFLAG_CAN_MULTI_CONN,
  TFLAG_HAS_FLAGS,
  TFLAG_READ_ONLY,
  TFLAG_SEND_FLUSH,
  type Request,
} from './protocol.js';
import { ConnectionClosed, SocketReader } from './socket-reader.js';
import { readReply, status } from './replies.js';
import type { BlockSource } from './source.js';

export interface NbdServerOptions {
  /** Export name -> source; '' is the default export. */
  exports: ReadonlyMap<string, BlockSource>;
  /** Largest NBD_CMD_READ (default 32 MiB). */
  maxRead?: number;
  /** Requests of one connection running at once (default 16). */
  maxInFlight?: number;
  /** Reply bytes queued on a connection before it stops taking requests (default 64 MiB). */
  maxQueuedBytes?: number;
  /** Bytes of reads running at once on a connection (default 64 MiB; a single read up to maxRead always runs). */
  maxInFlightBytes?: number;
  /** Connections open at once; more are closed as they arrive (default 64). */
  maxConnections?: number;
  /** A client still haggling options after this long is disconnected (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Told of source failures (answered EIO) and closed connections' reasons. */
  onError?: (e: unknown) => void;
}

const MiB = 1024 * 1024;
const EXPORT_FLAGS = TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH | TFLAG_CAN_MULTI_CONN;
/** Largest block status length (a u32 descriptor). */
const U32_MAX = 2 ** 32 - 1;

export class NbdServer {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly maxRead: number;
  private readonly maxInFlight: number;
  private readonly maxQueued: number;
  private readonly maxInFlightBytes: number;
  private path: string | undefined;

  constructor(private readonly opts: NbdServerOptions) {
    this.maxRead = opts.maxRead ?? 32 * MiB;
    this.maxInFlight = opts.maxInFlight ?? 16;
    this.maxQueued = opts.maxQueuedBytes ?? 64 * MiB;
    this.maxInFlightBytes = opts.maxInFlightBytes ?? 64 * MiB;
    this.server = createServer((socket) => this.connection(socket));
    this.server.maxConnections = opts.maxConnections ?? 64;
  }

  /**
   * Listens on a unix socket. A stale socket at path (nothing answers on it)
   * is replaced; a live one (CONFLICT) or any other kind of file
   * (INVALID_ARGUMENT) is left alone and refused.
   */
  async listen(path: string): Promise<void> {
    await removeStaleSocket(path);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(path, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.path = path;
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.path) await rm(this.path, { force: true });
  }

  private connection(socket: Socket): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    const reader = new SocketReader(socket);
    this.run(socket, reader).catch((e) => {
      if (!(e instanceof ConnectionClosed)) this.opts.onError?.(e);
      socket.destroy();
    });
  }

  private async run(socket: Socket, reader: SocketReader): Promise<void> {
    const limits = { maxOptionLength: 64 * 1024, maxOptions: 64, maxRead: this.maxRead };
    // A client that never finishes the handshake does not hold its connection for ever.
    socket.setTimeout(this.opts.handshakeTimeoutMs ?? 30_000, () => socket.destroy());
    const session = await handshake(socket, reader, this.opts.exports, EXPORT_FLAGS, limits);
    socket.setTimeout(0);
    if (!session) {
      socket.end();
      return;
    }
    let inFlight = 0;
    let inFlightBytes = 0;
    let wake: (() => void) | undefined;
    const settled = () => new Promise<void>((resolve) => (wake = resolve));
    const done = (bytes: number) => {
      inFlight--;
      inFlightBytes -= bytes;
      const w = wake;
      wake = undefined;
      w?.();
    };
    const busy = () => inFlight >= this.maxInFlight || socket.writableLength > this.maxQueued;
    for (;;) {
      while (busy()) {
        // A request finishing, or the client draining replies, lets the next one in.
        if (socket.writableLength > this.maxQueued) await new Promise<void>((resolve) => socket.once('drain', resolve));
        else await settled();
      }
      const req = parseRequest(await reader.read(REQUEST_LENGTH));
      if (!req) throw new ProtocolViolation('bad request magic');
      if (req.type === CMD.DISC) {
        while (inFlight > 0) await settled();
        socket.end();
        return;
      }
      if (req.type === CMD.WRITE) {
        await reader.skip(req.length);
        this.fail(socket, session, req, NBD_EPERM, 'the export is read-only');
        continue;
      }
      // Reads hold their buffers until answered: their bytes in flight are bounded too.
      const bytes = req.type === CMD.READ && req.length <= this.maxRead ? req.length : 0;
      while (inFlight > 0 && inFlightBytes + bytes > this.maxInFlightBytes) await settled();
      inFlight++;
      inFlightBytes += bytes;
      this.answer(socket, session, req).finally(() => done(bytes));
    }
  }

  /** Answers one request (never throws: failures become NBD errors). */
  private async answer(socket: Socket, s: Negotiated, req: Request): Promise<void> {
    try {
      switch (req.type) {
        case CMD.READ: {
          const bad = this.checkRange(s.source, req, this.maxRead);
          if (bad) return this.fail(socket, s, req, NBD_EINVAL, bad);
          const { parts, data } = await readReply(s.source, req, s.structured);
          const release = s.source.release ? () => data.forEach((d) => s.source.release!(d)) : undefined;
          if (socket.destroyed) return release?.();
          // One writev: the reply's pieces go out together, never interleaved with another reply's.
          socket.cork();
          // The source's buffers go back to it once written (or the write failed).
          parts.forEach((p, i) => socket.write(p, i === parts.length - 1 ? release : undefined));
          socket.uncork();
          return;
        }
        case CMD.FLUSH:
          socket.write(simpleReply(req.handle, 0));
          return;
        case CMD.TRIM:
        case CMD.WRITE_ZEROES:
          return this.fail(socket, s, req, NBD_EPERM, 'the export is read-only');
        case CMD.BLOCK_STATUS: {
          if (!s.structured || !s.allocation) return this.fail(socket, s, req, NBD_EINVAL, 'base:allocation was not negotiated');
          const bad = this.checkRange(s.source, req, U32_MAX);
          if (bad) return this.fail(socket, s, req, NBD_EINVAL, bad);
          const runs = await status(s.source, req.offset, req.length, (req.flags & CMD_FLAG_REQ_ONE) !== 0);
          if (socket.destroyed) return;
          const body = Buffer.alloc(4 + 8 * runs.length);
          body.writeUInt32BE(BASE_ALLOCATION_ID, 0);
          runs.forEach((r, i) => {
            body.writeUInt32BE(r.length, 4 + 8 * i);
            body.writeUInt32BE(r.zero ? STATE_HOLE | STATE_ZERO : 0, 8 + 8 * i);
          });
          socket.write(Buffer.concat([chunkHeader(req.handle, REPLY_FLAG_DONE, REPLY_TYPE.BLOCK_STATUS, body.byteLength), body]));
          return;
        }
        default:
          return this.fail(socket, s, req, NBD_EINVAL, `command ${req.type} not supported`);
      }
    } catch (e) {
      this.opts.onError?.(e);
      this.fail(socket, s, req, isSnapyardError(e, 'RANGE_INVALID') ? NBD_EINVAL : NBD_EIO, 'read failed');
    }
  }

  /** Why a request's range is refused, or undefined. */
  private checkRange(source: BlockSource, req: Request, max: number): string | undefined {
    if (req.length === 0) return 'zero length';
    if (req.length > max) return `length ${req.length} over the limit of ${max}`;
    if (req.offset + req.length > source.size) return `range ${req.offset} +${req.length} past the end (${source.size})`;
    return undefined;
  }

  private fail(socket: Socket, s: Negotiated, req: Request, error: number, message: string): void {
    if (socket.destroyed) return;
    // Structured replies are required for reads once negotiated; an error chunk is valid for every command then.
    if (s.structured) socket.write(Buffer.concat(errorChunk(req.handle, error, message)));
    else socket.write(simpleReply(req.handle, error));
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) return;
  if (!st.isSocket()) throw new SnapyardError('INVALID_ARGUMENT', `${path} exists and is not a socket: not replacing it`);
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new SnapyardError('CONFLICT', `${path}: another server is listening on it`);
  await rm(path, { force: true });
}

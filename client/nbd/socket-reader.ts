/**
 * Exact-length reads from a socket, with bounded buffering: the socket is
 * paused once more than `highWater` bytes wait unread, so a client that
 * sends faster than the server answers is held back by TCP / the unix
 * socket, not by the server's memory.
 */
import type { Socket } from 'node:net';

export class ConnectionClosed extends Error {
  constructor() {
    super('connection closed');
  }
}

export class SocketReader {
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private closed = false;
  private waiter: { n: number; resolve: () => void; reject: (e: Error) => void } | undefined;

  constructor(private readonly socket: Socket, private readonly highWater = 1024 * 1024) {
    socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.buffered += b.byteLength;
      if (this.buffered > this.highWater) socket.pause();
      this.wake();
    });
    const close = () => {
      this.closed = true;
      this.wake();
    };
    socket.on('end', close);
    socket.on('close', close);
    socket.on('error', close);
  }

  /** The next n bytes (n bounded by the caller); ConnectionClosed if the peer goes first. */
  async read(n: number): Promise<Buffer> {
    await this.available(n);
    return this.take(n);
  }

  /** Discards the next n bytes, a piece at a time (never buffers more than highWater). */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      await this.available(1);
      left -= this.take(Math.min(left, this.buffered)).byteLength;
    }
  }

  private available(n: number): Promise<void> {
    if (this.buffered >= n) return Promise.resolve();
    if (this.closed) return Promise.reject(new ConnectionClosed());
    this.socket.resume();
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  private wake(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.buffered >= w.n) {
      this.waiter = undefined;
      w.resolve();
    } else if (this.closed) {
      this.waiter = undefined;
      w.reject(new ConnectionClosed());
    }
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    let out: Buffer;
    const first = this.chunks[0]!;
    if (first.byteLength >= n) {
      out = first.subarray(0, n);
      if (first.byteLength === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.byteLength, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.byteLength) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    if (this.buffered <= this.highWater && !this.closed) this.socket.resume();
    return out;
  }
}

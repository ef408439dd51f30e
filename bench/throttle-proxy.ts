/**
 * A TCP proxy that shapes what the server sends to `rate` bytes/s over all
 * its connections together (one node's link), with `pipe`'s backpressure:
 * bytes from the server are released on a shared schedule, and a server
 * socket is paused while more than 1 MiB of it waits. What the client sends
 * passes as it comes (requests are small). Counts the bytes sent down.
 */
import { connect } from 'node:net';
import { startPipeProxy } from './wire-proxy.js';

export interface ThrottleProxy {
  port: number;
  down(): number;
  close(): Promise<void>;
}

export async function startThrottleProxy(targetPort: number, rate: number): Promise<ThrottleProxy> {
  let linkFreeAt = performance.now();
  let down = 0;
  const proxy = await startPipeProxy(() => connect({ port: targetPort, host: '127.0.0.1', noDelay: true }), () => {}, (client, up, drop) => {
    let waiting = 0;
    // One FIFO per connection, drained by one timer: bytes leave in the order they came.
    const queue: Array<{ at: number; d: Buffer }> = [];
    let timer: NodeJS.Timeout | null = null;
    const pump = () => {
      timer = null;
      const now = performance.now();
      while (queue.length > 0 && queue[0]!.at <= now) {
        const { d } = queue.shift()!;
        down += d.byteLength;
        waiting -= d.byteLength;
        if (!client.destroyed) client.write(d);
      }
      if (waiting <= 1 << 20) up.resume();
      if (queue.length > 0) timer = setTimeout(pump, queue[0]!.at - now);
    };
    up.on('data', (d: Buffer) => {
      linkFreeAt = Math.max(linkFreeAt, performance.now()) + (d.byteLength / rate) * 1000;
      queue.push({ at: linkFreeAt, d });
      waiting += d.byteLength;
      if (waiting > 1 << 20) up.pause();
      timer ??= setTimeout(pump, linkFreeAt - performance.now());
    });
    // The server's end or close reaches the client once what it sent has.
    const later = (fn: () => void) => setTimeout(fn, Math.max(0, linkFreeAt - performance.now()) + 5);
    up.on('end', () => later(() => client.end()));
    up.on('error', drop).on('close', () => later(drop));
  });
  return { port: proxy.port, down: () => down, close: proxy.close };
}

/**
 * A tiny TCP proxy in front of the server that counts the bytes crossing it in
 * each direction: what a client really sends and receives (TCP payload, headers
 * and chunked framing included; IP/TCP headers not), not an estimate.
 *
 *   const proxy = await startWireProxy(serverPort);
 *   proxy.reset(); ...client talks to 127.0.0.1:proxy.port...; proxy.counts()
 *
 * Given several ports, it sends each new client connection to the next one
 * in turn (round robin: a keep-alive connection stays on one backend), as a
 * load balancer in front of replicas would.
 *
 * Runs in the calling process: drive clients with async spawn (not execFileSync),
 * or the proxy's event loop stalls.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface WireCounts {
  /** client → server */
  up: number;
  /** server → client */
  down: number;
  connections: number;
}

export interface WireProxy {
  port: number;
  reset(): void;
  counts(): WireCounts;
  close(): Promise<void>;
}

/**
 * A loopback TCP listener that pipes each client connection to the socket
 * `upstream()` opens, both ways with backpressure; `watch` sees both sockets
 * first (to count what is read). Either side closing or failing ends both.
 */
export async function startPipeProxy(
  upstream: () => Socket,
  watch: (client: Socket, upstream: Socket) => void,
  /** Carries the server's bytes to the client instead of pipe() (and ends the pair with `drop` when the server side is done). */
  down?: (client: Socket, upstream: Socket, drop: () => void) => void,
): Promise<{ port: number; close(): Promise<void> }> {
  const open = new Set<Socket>();
  const server = createServer({ noDelay: true }, (client) => {
    const up = upstream();
    open.add(client);
    open.add(up);
    watch(client, up);
    client.pipe(up);
    const drop = () => {
      client.destroy();
      up.destroy();
      open.delete(client);
      open.delete(up);
    };
    client.on('error', drop).on('close', drop);
    if (down) down(client, up, drop);
    else {
      up.pipe(client);
      up.on('error', drop).on('close', drop);
    }
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return {
    port: (server.address() as { port: number }).port,
    close: () => new Promise<void>((res) => {
      for (const s of open) s.destroy();
      server.close(() => res());
    }),
  };
}

export async function startWireProxy(targetPort: number | number[], targetHost = '127.0.0.1'): Promise<WireProxy> {
  const ports = Array.isArray(targetPort) ? targetPort : [targetPort];
  let next = 0;
  let c: WireCounts = { up: 0, down: 0, connections: 0 };
  const proxy = await startPipeProxy(() => connect({ port: ports[next++ % ports.length]!, host: targetHost, noDelay: true }), (client, upstream) => {
    c.connections++;
    // Count where the bytes are read; pipe() carries them on with backpressure.
    client.on('data', (d: Buffer) => { c.up += d.length; });
    upstream.on('data', (d: Buffer) => { c.down += d.length; });
  });
  return {
    port: proxy.port,
    reset: () => { c = { up: 0, down: 0, connections: 0 }; },
    counts: () => ({ ...c }),
    close: proxy.close,
  };
}

/**
 * A tiny TCP proxy in front of the server that counts the bytes crossing it in
 * each direction: what a client really sends and receives (TCP payload, headers
 * and chunked framing included; IP/TCP headers not), not an estimate.
 *
 *   const proxy = await startWireProxy(serverPort);
 *   proxy.reset(); ...client talks to 127.0.0.1:proxy.port...; proxy.counts()
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

export async function startWireProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<WireProxy> {
  let c: WireCounts = { up: 0, down: 0, connections: 0 };
  const open = new Set<Socket>();
  const server = createServer({ noDelay: true }, (client) => {
    c.connections++;
    const upstream = connect({ port: targetPort, host: targetHost, noDelay: true });
    open.add(client);
    open.add(upstream);
    // Count where the bytes are read; pipe() carries them on with backpressure.
    client.on('data', (d: Buffer) => { c.up += d.length; });
    upstream.on('data', (d: Buffer) => { c.down += d.length; });
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  return {
    port: (server.address() as { port: number }).port,
    reset: () => { c = { up: 0, down: 0, connections: 0 }; },
    counts: () => ({ ...c }),
    close: () => new Promise<void>((res) => {
      for (const s of open) s.destroy();
      server.close(() => res());
    }),
  };
}

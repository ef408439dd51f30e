/**
 * A round-robin TCP proxy for replica tests: one loopback endpoint in front of
 * several `snapyard serve` processes, each new client connection sent to the
 * next backend, bytes piped both ways (a keep-alive connection stays on one
 * replica). Backends can be replaced while it runs (a replica restarted on a
 * new port); a backend that refuses the connection closes the client's.
 */
import { connect, createServer, type Socket } from 'node:net';

export interface RoundRobinProxy {
  url: string;
  /** The backends' ports, in turn; replaced whole by setBackends. */
  setBackends(ports: number[]): void;
  /** Connections sent to each port so far. */
  counts(): Map<number, number>;
  close(): Promise<void>;
}

export async function startRoundRobinProxy(ports: number[]): Promise<RoundRobinProxy> {
  let backends = [...ports];
  let next = 0;
  const sent = new Map<number, number>();
  const open = new Set<Socket>();
  const server = createServer({ noDelay: true }, (client) => {
    const port = backends[next++ % backends.length]!;
    sent.set(port, (sent.get(port) ?? 0) + 1);
    const upstream = connect({ port, host: '127.0.0.1', noDelay: true });
    open.add(client);
    open.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = (s: Socket) => () => {
      open.delete(s);
      s.destroy();
    };
    // Either side failing (a replica killed, a client gone) tears down both.
    client.on('error', end(upstream));
    upstream.on('error', end(client));
    client.on('close', end(upstream));
    upstream.on('close', end(client));
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('proxy has no port');
  return {
    url: `http://127.0.0.1:${address.port}`,
    setBackends: (p) => {
      backends = [...p];
    },
    counts: () => new Map(sent),
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
}

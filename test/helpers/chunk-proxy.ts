/**
 * An HTTP proxy in front of a test registry for the lazy mount's tests: it
 * counts the `_chunks` requests and the bytes of their responses (what a
 * client fetched), can flip one byte of the next `_chunks` response (a chunk
 * corrupted in flight), and can go away (close its port and every
 * connection: a registry that vanished) and come back on the same port.
 *
 * Runs in the test's process: drive clients with async spawn.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface ChunkProxy {
  url: string;
  /** `_chunks` requests answered, and their response body bytes. */
  counts(): { chunkRequests: number; chunkBytes: number; requests: number };
  /** The next `_chunks` response gets one byte flipped at body offset `at` (default 100: inside the first chunk's payload). */
  corruptNext(at?: number): void;
  /** Whether a byte was flipped since corruptNext. */
  corrupted(): boolean;
  /** Stops accepting and drops every open connection. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

export async function startChunkProxy(upstream: string): Promise<ChunkProxy> {
  const target = new URL(upstream);
  const sockets = new Set<Socket>();
  let chunkRequests = 0;
  let chunkBytes = 0;
  let requests = 0;
  let corruptAt: number | null = null;
  let flipped = false;
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    requests++;
    const isChunks = /\/_chunks$/.test(req.url ?? '');
    const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      const flipAt = isChunks && r.statusCode === 200 && corruptAt !== null ? corruptAt : null;
      if (flipAt !== null) corruptAt = null;
      if (isChunks) chunkRequests++;
      let seen = 0;
      r.on('data', (d: Buffer) => {
        if (isChunks) chunkBytes += d.byteLength;
        if (flipAt !== null && flipAt >= seen && flipAt < seen + d.byteLength) {
          d = Buffer.from(d);
          d[flipAt - seen] = d[flipAt - seen]! ^ 0x5a;
          flipped = true;
        }
        seen += d.byteLength;
        if (!res.write(d)) {
          r.pause();
          res.once('drain', () => r.resume());
        }
      });
      r.on('end', () => res.end());
      r.on('error', () => res.destroy());
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };
  let server: Server = createServer(handle);
  const track = (s: Server) => s.on('connection', (c: Socket) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
  });
  track(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const down = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const c of sockets) c.destroy();
    await closed;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    counts: () => ({ chunkRequests, chunkBytes, requests }),
    corruptNext: (at = 100) => {
      corruptAt = at;
      flipped = false;
    },
    corrupted: () => flipped,
    down,
    up: async () => {
      server = createServer(handle);
      track(server);
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    },
    close: async () => {
      if (server.listening) await down();
    },
  };
}

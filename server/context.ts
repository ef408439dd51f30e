import type { IncomingMessage, ServerResponse } from 'node:http';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Store } from '../storage/open-store.js';

/** What a route handler gets: the store, the raw request, and the parsed URL. */
export interface RequestContext {
  store: Store;
  method: string;
  url: URL;
  headers: Headers;
  incoming: IncomingMessage;
  outgoing: ServerResponse;
  /** The authenticated caller (null: anonymous, or auth is off); session caps are counted per user. */
  user: string | null;
  /** May the caller take `action` on repository `repo` (true when auth is off)? */
  can(repo: string, action: 'pull' | 'push' | 'delete'): boolean;
  /** May the caller pull `repo`? Listings show only those. */
  mayPull(repo: string): boolean;
  /** Relays this request to the replica at `base` (an upload session it holds: forward.ts) and answers what it answers. */
  forward?: (base: string) => Promise<Response>;
  /** Reports a failure after the response has started (it can only be cut short then). */
  onStreamError?: (e: unknown) => void;
}

export function header(ctx: RequestContext, name: string): string | undefined {
  return ctx.headers.get(name) ?? undefined;
}

/** A whole response (streamed bodies go through sendStream). */
export function respond(status: number, headers: Record<string, string> = {}, body?: string | Buffer): Response {
  return new Response(body ?? null, { status, headers });
}

/**
 * Streams a body straight to the socket (no web-stream copies), honouring
 * backpressure; a failure half-way cuts the connection, so a client never
 * takes a short body for a whole one.
 */
export async function sendStream(
  ctx: RequestContext,
  status: number,
  headers: Record<string, string>,
  /** Pieces; an array's pieces are written together (e.g. a frame's header and its cached payload, without a copy). */
  body: AsyncIterable<Uint8Array | readonly Uint8Array[]>,
  /** Called with each piece once the socket no longer needs it (for buffer reuse). */
  release?: (piece: Uint8Array) => void,
): Promise<Response> {
  const out = ctx.outgoing;
  out.writeHead(status, { ...headers, 'Docker-Distribution-API-Version': 'registry/2.0' });
  const it = body[Symbol.asyncIterator]();
  try {
    for (;;) {
      const { value, done } = await it.next();
      if (done) break;
      if (out.destroyed) break;
      let ok: boolean;
      if (value instanceof Uint8Array) ok = release ? out.write(value, () => release(value)) : out.write(value);
      else {
        // Written one after another in this tick: the response corks its socket for the tick (one writev).
        ok = true;
        for (const piece of value) ok = (release ? out.write(piece, () => release(piece)) : out.write(piece)) && ok;
      }
      if (!ok) await drained(out);
    }
    // A client that went away gets no end: writableEnded stays false, and the request is logged as aborted.
    if (!out.destroyed) out.end();
  } catch (e) {
    ctx.onStreamError?.(e);
    out.destroy(e as Error);
  } finally {
    await it.return?.();
  }
  return RESPONSE_ALREADY_SENT;
}

function drained(out: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
  });
}

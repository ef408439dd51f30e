import type { IncomingMessage } from 'node:http';
import type { Store } from '../storage/open-store.js';

/** What a route handler gets: the store, the raw request, and the parsed URL. */
export interface RequestContext {
  store: Store;
  method: string;
  url: URL;
  headers: Headers;
  incoming: IncomingMessage;
}

export function header(ctx: RequestContext, name: string): string | undefined {
  return ctx.headers.get(name) ?? undefined;
}

/** A response; `body` may be a stream of pieces (sent as it is produced). */
export function respond(status: number, headers: Record<string, string> = {}, body?: string | Buffer | AsyncIterable<Uint8Array>): Response {
  if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) {
    return new Response(body ?? null, { status, headers });
  }
  const it = body[Symbol.asyncIterator]();
  const stream = new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      try {
        const { value, done } = await it.next();
        if (done) ctrl.close();
        else ctrl.enqueue(value);
      } catch (e) {
        ctrl.error(e);
      }
    },
    async cancel() {
      await it.return?.();
    },
  });
  return new Response(stream, { status, headers });
}

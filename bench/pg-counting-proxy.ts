/**
 * A TCP proxy in front of PostgreSQL that counts the round trips its clients
 * make: each Sync ('S', the end of an extended-protocol query: Parse/Bind/
 * Execute... Sync) and each simple Query ('Q') a client sends is one wait for
 * the server. Give the server `postgres://...@127.0.0.1:PROXY_PORT/DB`.
 *
 * Runs in the calling process: drive clients with async spawn, not execFileSync.
 */
import { connect } from 'node:net';
import { startPipeProxy } from './wire-proxy.js';

export interface PgCounts {
  /** Sync + Query messages: round trips. */
  roundTrips: number;
  /** Frontend messages by type letter (P, B, E, S, Q, X, ...). */
  messages: Record<string, number>;
  connections: number;
  /** The SQL of each Parse ('P') and simple Query ('Q') message (first 100 characters, whitespace folded), counted. */
  statements: Record<string, number>;
}

const zero = (): PgCounts => ({ roundTrips: 0, messages: {}, connections: 0, statements: {} });

/** The SQL text a Parse (statement name, then the query) or Query message carries. */
function statementOf(type: string, body: Buffer): string | undefined {
  if (type !== 'P' && type !== 'Q') return undefined;
  let at = 0;
  if (type === 'P') at = body.indexOf(0) + 1;
  const end = body.indexOf(0, at);
  return body.subarray(at, end < 0 ? body.length : end).toString('utf8').replace(/\s+/g, ' ').trim().slice(0, 100);
}

export interface PgCountingProxy {
  port: number;
  /** The same URL with the proxy's host and port. */
  urlFor(postgresUrl: string): string;
  reset(): void;
  counts(): PgCounts;
  /** Round trips since the proxy started (reset() leaves it). */
  roundTripsSoFar(): number;
  close(): Promise<void>;
}

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;

/** Splits a client's byte stream into frontend messages: untyped startup packets first (an SSL or GSS request is followed by another), then type byte + int32 length. */
function frontendMessages(onMessage: (type: string, body: Buffer) => void): (d: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  let startup = true;
  return (d) => {
    pending = pending.length === 0 ? d : Buffer.concat([pending, d]);
    for (;;) {
      if (startup) {
        if (pending.length < 8) break;
        const len = pending.readInt32BE(0);
        if (pending.length < len) break;
        const code = pending.readInt32BE(4);
        pending = pending.subarray(len);
        if (code !== SSL_REQUEST && code !== GSSENC_REQUEST) startup = false;
        continue;
      }
      if (pending.length < 5) break;
      const len = pending.readInt32BE(1);
      if (pending.length < 1 + len) break;
      onMessage(String.fromCharCode(pending[0]!), pending.subarray(5, 1 + len));
      pending = pending.subarray(1 + len);
    }
  };
}

export async function startPgCountingProxy(postgresUrl: string): Promise<PgCountingProxy> {
  const target = new URL(postgresUrl);
  let c = zero();
  let total = 0;
  const proxy = await startPipeProxy(() => connect({ host: target.hostname, port: Number(target.port || 5432), noDelay: true }), (client) => {
    c.connections++;
    client.on('data', frontendMessages((type, body) => {
      c.messages[type] = (c.messages[type] ?? 0) + 1;
      if (type === 'S' || type === 'Q') {
        c.roundTrips++;
        total++;
      }
      const sql = statementOf(type, body);
      if (sql !== undefined) c.statements[sql] = (c.statements[sql] ?? 0) + 1;
    }));
  });
  return {
    port: proxy.port,
    urlFor: (u) => {
      const x = new URL(u);
      x.hostname = '127.0.0.1';
      x.port = String(proxy.port);
      return x.toString();
    },
    reset: () => { c = { ...zero(), connections: c.connections }; },
    counts: () => ({ ...c, messages: { ...c.messages }, statements: { ...c.statements } }),
    roundTripsSoFar: () => total,
    close: proxy.close,
  };
}

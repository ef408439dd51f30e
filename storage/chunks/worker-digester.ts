import type { Digest, HashAlgorithm, StreamDigester } from '../digest.js';
import type { HashResult, HashTask } from './hash-task.js';

/** A worker pool whose workers take hash tasks (hash-task.ts), on a chosen worker. */
export interface HashingPool {
  readonly size: number;
  runAt(slot: number, req: HashTask, transfer: ArrayBuffer[]): Promise<unknown>;
}

const PIECE = 1024 * 1024;
/** Pieces in flight before the caller is asked to wait. */
const IN_FLIGHT = 4;

/**
 * Hashes a stream on one worker of `pool` (which keeps the hash state under
 * `stream`): pieces are copied into 1 MiB buffers, sent in order, and the
 * buffers come back for reuse (`spare`). Takes sha256 off the event loop
 * (or md5: its digest() answers `md5:<hex>`, not a Digest).
 */
export function workerDigester(pool: HashingPool, stream: number, spare: Buffer[], algorithm: HashAlgorithm = 'sha256'): StreamDigester {
  const slot = stream % pool.size;
  let buf: Buffer | null = null;
  let used = 0;
  let size = 0;
  const inFlight: Array<Promise<unknown>> = [];
  let last: Promise<unknown> = Promise.resolve();
  const send = (end: boolean) => {
    const b = buf ?? Buffer.allocUnsafeSlow(PIECE);
    const own = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    last = pool.runAt(slot, { op: 'hash', stream, buf: own, length: used, end, algorithm }, [own.buffer as ArrayBuffer]).then((r) => {
      const back = (r as HashResult).buf;
      if (spare.length < 8) spare.push(Buffer.from(back.buffer, back.byteOffset, back.byteLength));
      return r;
    });
    last.catch(() => {}); // reported by digest()
    inFlight.push(last);
    buf = null;
    used = 0;
  };
  const drain = async () => {
    while (inFlight.length > IN_FLIGHT) await inFlight.shift();
  };
  return {
    get size() {
      return size;
    },
    update: (piece) => {
      size += piece.byteLength;
      let i = 0;
      while (i < piece.byteLength) {
        if (!buf) buf = spare.pop() ?? Buffer.allocUnsafeSlow(PIECE);
        const n = Math.min(PIECE - used, piece.byteLength - i);
        buf.set(piece.subarray(i, i + n), used);
        used += n;
        i += n;
        if (used === PIECE) send(false);
      }
      // Backpressure: the caller waits while the hasher is more than a few MiB behind (a piece
      // larger than 1 MiB sends several buffers: wait for as many as it took the queue over).
      if (inFlight.length > IN_FLIGHT) return drain();
      return undefined;
    },
    digest: async () => {
      send(true);
      return ((await last) as { digest: Digest }).digest;
    },
  };
}

/**
 * Writes a stream to a new file (the qcow2 spool: qcow2-ingest.ts) holding
 * little memory: received pieces are kept as they are (no copy into spool
 * buffers) until ~1 MiB has gathered, then written with one writev, at most
 * one write in flight. A stream that stalls (an upload session waiting for
 * its next PATCH) has what it gathered written after IDLE_MS, so an idle
 * session holds no bytes at all (two 4 MiB buffers per session before).
 */
import { open, type FileHandle } from 'node:fs/promises';

const GATHER = 1024 * 1024;
const IDLE_MS = 200;

async function writeAll(fh: FileHandle, pieces: Uint8Array[], at: number): Promise<void> {
  let rest = pieces;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, at);
    at += bytesWritten;
    let skip = bytesWritten;
    const next: Uint8Array[] = [];
    for (const p of rest) {
      if (skip >= p.byteLength) skip -= p.byteLength;
      else {
        next.push(skip > 0 ? p.subarray(skip) : p);
        skip = 0;
      }
    }
    if (bytesWritten === 0 && next.length > 0) throw new Error('spool write made no progress');
    rest = next;
  }
}

/** Resolves true when `p` has not settled within `ms`. */
function stalls(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const idle = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), ms)));
  return Promise.race([p.then(() => false, () => false), idle]).finally(() => clearTimeout(timer));
}

/**
 * Creates `path` (it must not exist) and writes the stream into it; `onPiece`
 * sees every piece first (hashing, size checks: throwing stops the spool).
 * Returns the bytes written.
 */
export async function spoolToFile(path: string, source: AsyncIterable<Uint8Array>, onPiece: (piece: Uint8Array) => void): Promise<number> {
  const fh = await open(path, 'wx');
  let pos = 0;
  let held: Uint8Array[] = [];
  let heldBytes = 0;
  let inflight: Promise<void> | null = null;
  const write = async () => {
    if (heldBytes === 0) return;
    const pieces = held;
    const n = heldBytes;
    held = [];
    heldBytes = 0;
    if (inflight) await inflight;
    const w = writeAll(fh, pieces, pos);
    w.catch(() => {}); // awaited before the next write and at the end
    inflight = w;
    pos += n;
  };
  const it = source[Symbol.asyncIterator]();
  let waiting = false;
  let ended = false;
  try {
    for (;;) {
      const next = it.next();
      waiting = true;
      if (heldBytes > 0 && (await stalls(next, IDLE_MS))) await write();
      const r = await next;
      waiting = false;
      if (r.done) {
        ended = true;
        break;
      }
      onPiece(r.value);
      held.push(r.value);
      heldBytes += r.value.byteLength;
      if (heldBytes >= GATHER) await write();
    }
    await write();
    if (inflight) await inflight;
    return pos;
  } finally {
    await (inflight as Promise<void> | null)?.catch(() => {});
    held = [];
    // Let the source clean up, unless a read of it is still pending (a stalled producer: it is failed by its owner).
    if (!ended && !waiting) await it.return?.().catch(() => {});
    await fh.close();
  }
}

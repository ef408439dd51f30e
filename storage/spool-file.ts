/**
 * Writes a stream to a new file (the qcow2 spool: qcow2-ingest.ts) holding
 * little memory: received pieces are kept as they are (no copy into spool
 * buffers) until ~1 MiB has gathered, then written with one writev, at most
 * one write in flight. A stream that stalls (an upload session waiting for
 * its next PATCH) has what it gathered written after IDLE_MS, so an idle
 * session holds no bytes at all (two 4 MiB buffers per session before).
 *
 * The caller pushes the pieces (write), so the same loop can chunk them as
 * they pass (the streamed guest view).
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

export class SpoolFile {
  private pos = 0;
  private held: Uint8Array[] = [];
  private heldBytes = 0;
  private inflight: Promise<void> | null = null;
  private failure: unknown = null;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(private readonly fh: FileHandle) {}

  /** Creates `path` (it must not exist). */
  static async create(path: string): Promise<SpoolFile> {
    return new SpoolFile(await open(path, 'wx'));
  }

  /** Bytes taken so far. */
  get size(): number {
    return this.pos + this.heldBytes;
  }

  /** Takes the piece (kept, not copied, until written: the caller must not change it). */
  async write(piece: Uint8Array): Promise<void> {
    clearTimeout(this.timer);
    if (this.failure) throw this.failure;
    if (this.closed) throw new Error('spool file is closed');
    this.held.push(piece);
    this.heldBytes += piece.byteLength;
    if (this.heldBytes >= GATHER) await this.send();
    // Written out if the stream stalls before the next piece.
    if (this.heldBytes > 0) this.timer = setTimeout(() => void this.send(), IDLE_MS);
  }

  /** Starts writing what is held after the write in flight (writes are chained); resolves when that earlier write is done. */
  private send(): Promise<void> {
    const prev = this.inflight;
    if (this.heldBytes === 0) return prev ?? Promise.resolve();
    const pieces = this.held;
    const at = this.pos;
    this.pos += this.heldBytes;
    this.held = [];
    this.heldBytes = 0;
    this.inflight = (async () => {
      if (prev) await prev;
      await writeAll(this.fh, pieces, at);
    })().catch((e) => {
      this.failure ??= e;
    });
    return prev ?? Promise.resolve();
  }

  /** Writes what is held, waits for the writes and closes the file; returns its size. */
  async close(): Promise<number> {
    clearTimeout(this.timer);
    try {
      await this.send();
      await this.inflight;
      if (this.failure) throw this.failure;
      return this.pos;
    } finally {
      await this.dispose();
    }
  }

  /** Drops what is held, waits for a write in flight and closes the file (on failure; idempotent). */
  async dispose(): Promise<void> {
    clearTimeout(this.timer);
    this.held = [];
    this.heldBytes = 0;
    if (this.closed) return;
    this.closed = true;
    await this.inflight;
    await this.fh.close();
  }
}

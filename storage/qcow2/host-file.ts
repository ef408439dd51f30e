/**
 * Positioned reads from the qcow2 file (node:fs readSync with explicit
 * positions; nothing reads the whole file). Every read is checked against
 * the file size first; reads the format allows to run past the end of the
 * file (data clusters, compressed data, as qemu reads them) are zero-filled.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { invalid } from './format.js';

/** Largest single readSync (Node's limit is 2 GiB - 1). */
const MAX_READ = 1 << 30;

export class HostFile {
  readonly fd: number;
  readonly size: number;
  private closed = false;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'r');
    try {
      this.size = fstatSync(this.fd).size;
    } catch (e) {
      closeSync(this.fd);
      throw e;
    }
  }

  /** Reads target.length bytes at `pos`; the range must be inside the file (`what` names it in the error). */
  readExact(target: Buffer, pos: number, what: string): Buffer {
    if (pos < 0 || pos + target.byteLength > this.size) {
      throw invalid(`${what} at 0x${pos.toString(16)} (+${target.byteLength} bytes) is past the end of the file (${this.size} bytes)`);
    }
    const n = this.readAvailable(target, pos);
    if (n !== target.byteLength) throw invalid(`${what}: short read at 0x${pos.toString(16)} (file changed while reading?)`);
    return target;
  }

  /** Reads up to target.length bytes at `pos`, zero-filling whatever lies past the end of the file; returns the bytes read from the file. */
  readZeroFilled(target: Buffer, pos: number): number {
    const n = this.readAvailable(target, pos);
    if (n < target.byteLength) target.fill(0, n);
    return n;
  }

  private readAvailable(target: Buffer, pos: number): number {
    const want = Math.max(0, Math.min(target.byteLength, this.size - pos));
    let done = 0;
    while (done < want) {
      const n = readSync(this.fd, target, done, Math.min(want - done, MAX_READ), pos + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

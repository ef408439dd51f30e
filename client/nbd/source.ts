/**
 * What an NBD export serves: a block source of `size` guest bytes. The server
 * checks every request against `size` before it calls read or blockStatus,
 * so a source sees only 0 <= offset, offset + length <= size, length > 0.
 *
 * Sources for local data: a raw file (its bytes) and a qcow2 image (its guest
 * view, through storage/qcow2/reader.ts, backing chain included; zero and
 * unallocated ranges are reported by blockStatus). The lazy source over
 * registry chunks (issue 13) implements the same interface.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { SnapyardError } from '../../storage/errors.js';
import { Qcow2Image, type BackingReader } from '../../storage/qcow2/reader.js';

export interface StatusExtent {
  length: number;
  /** Reads as zeros (a hole, a zero cluster, unallocated with nothing below). */
  zero: boolean;
}

export interface BlockSource {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  /**
   * Runs covering [offset, offset + length) from its start, in order, each
   * length > 0; may cover less than asked (at least one run), never more.
   */
  blockStatus?(offset: number, length: number): Promise<StatusExtent[]>;
  /**
   * Optional: the server is done with a buffer read() returned (its reply
   * was written out), so the source may reuse its memory.
   */
  release?(buf: Buffer): void;
  close?(): void;
}

/** A blockStatus answer stops after this many runs (the client asks again for the rest). */
export const MAX_STATUS_EXTENTS = 1024;
/** Backing files followed at most (a loop of backing files ends here). */
const MAX_CHAIN = 16;

/** A raw file as a backing reader (its size is its virtual size). */
class RawFile implements BackingReader {
  readonly virtualSize: number;
  constructor(private readonly fd: number) {
    this.virtualSize = fstatSync(fd).size;
  }

  static open(path: string): RawFile {
    const fd = openSync(path, 'r');
    try {
      return new RawFile(fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  readGuest(offset: number, length: number): Buffer {
    const b = Buffer.alloc(length);
    this.readGuestInto(b, offset);
    return b;
  }

  readGuestInto(target: Buffer, offset: number): void {
    let done = 0;
    while (done < target.byteLength) {
      const n = readSync(this.fd, target, done, target.byteLength - done, offset + done);
      if (n === 0) break; // past the end: zeros (Buffer.alloc / caller's fill)
      done += n;
    }
    if (done < target.byteLength) target.fill(0, done);
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** A raw file's bytes. */
export function openRawSource(path: string): BlockSource {
  const f = RawFile.open(path);
  return {
    size: f.virtualSize,
    read: async (offset, length) => f.readGuest(offset, length),
    close: () => f.close(),
  };
}

type Layer = { kind: 'qcow2'; image: Qcow2Image } | { kind: 'raw'; file: RawFile };

/** Opens a qcow2 image and its backing chain (relative backing names are relative to the image's directory). */
function openChain(path: string): Layer[] {
  const layers: Layer[] = [];
  try {
    let current: string | undefined = path;
    let format: string | undefined;
    while (current !== undefined) {
      if (layers.length >= MAX_CHAIN) throw new SnapyardError('QCOW2_INVALID', `${path}: more than ${MAX_CHAIN} backing files`);
      if (format === 'raw' || (format === undefined && layers.length > 0 && !Qcow2Image.sniff(current))) {
        layers.push({ kind: 'raw', file: RawFile.open(current) });
        break;
      }
      const image = Qcow2Image.open(current);
      layers.push({ kind: 'qcow2', image });
      const next: string | undefined = image.backingFile;
      if (next !== undefined && /^[a-z+]+:/i.test(next)) {
        throw new SnapyardError('QCOW2_INVALID', `${current}: backing file ${next} is not a local file`);
      }
      format = image.backingFormat;
      current = next === undefined ? undefined : isAbsolute(next) ? next : resolve(dirname(current), next);
    }
    for (let i = layers.length - 2; i >= 0; i--) {
      const below = layers[i + 1]!;
      (layers[i] as { image: Qcow2Image }).image.backing = below.kind === 'raw' ? below.file : below.image;
    }
    return layers;
  } catch (e) {
    closeLayers(layers);
    throw e;
  }
}

function closeLayers(layers: Layer[]): void {
  for (const l of layers) (l.kind === 'raw' ? l.file : l.image).close();
}

function layerSize(l: Layer): number {
  return l.kind === 'raw' ? l.file.virtualSize : l.image.virtualSize;
}

/** Appends a run, merging it with the last one of the same kind. */
function pushRun(out: StatusExtent[], length: number, zero: boolean): void {
  const last = out[out.length - 1];
  if (last && last.zero === zero) last.length += length;
  else out.push({ length, zero });
}

/** The runs of layers[i] over [offset, end), unallocated ranges from the layers below; stops near MAX_STATUS_EXTENTS. */
function chainStatus(layers: Layer[], i: number, offset: number, end: number, out: StatusExtent[]): void {
  const layer = layers[i]!;
  const size = layerSize(layer);
  const inside = Math.min(end, size);
  if (layer.kind === 'raw') {
    if (inside > offset) pushRun(out, inside - offset, false);
  } else if (inside > offset) {
    for (const e of layer.image.extents(offset, inside)) {
      if (out.length >= MAX_STATUS_EXTENTS) return;
      if (e.kind === 'unallocated' && i + 1 < layers.length) chainStatus(layers, i + 1, e.guestOffset, e.guestOffset + e.length, out);
      else pushRun(out, e.length, e.kind === 'zero' || e.kind === 'unallocated');
    }
  }
  if (out.length >= MAX_STATUS_EXTENTS) return;
  if (end > Math.max(offset, size)) pushRun(out, end - Math.max(offset, size), true); // past a smaller backing image
}

/** A qcow2 image's guest view (backing chain included), with its zero and unallocated ranges. */
export function openQcow2Source(path: string): BlockSource {
  const layers = openChain(path);
  const top = (layers[0] as { image: Qcow2Image }).image;
  return {
    size: top.virtualSize,
    read: async (offset, length) => top.readGuest(offset, length),
    blockStatus: async (offset, length) => {
      const out: StatusExtent[] = [];
      chainStatus(layers, 0, offset, offset + length, out);
      // Runs past the limit were cut short: keep only whole ones (at least one).
      return out.length > MAX_STATUS_EXTENTS ? out.slice(0, MAX_STATUS_EXTENTS) : out;
    },
    close: () => closeLayers(layers),
  };
}

/** A local file's guest view: qcow2 (by its magic) or raw. */
export function openFileSource(path: string): BlockSource {
  return Qcow2Image.sniff(path) ? openQcow2Source(path) : openRawSource(path);
}

/**
 * Where a client finds chunk bytes without the network, in order: local files
 * (the base image, then the existing output file: their indexes say which
 * chunks they hold and where), then the cache.
 * Every chunk is verified (sha256) before it is used; a base file whose bytes
 * no longer match is simply not a source for that chunk.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { BlobIndex } from '../storage/blobs/blob-index.js';
import { digestFromRaw, sha256Raw } from '../storage/digest.js';
import { isSnapyardError } from '../storage/errors.js';
import { Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import type { ClientCache } from './cache.js';
import { RANGE_FILE, RANGE_GUEST } from '../storage/chunks/file-ranges.js';

export interface LocalFile {
  path: string;
  index: BlobIndex;
}

/** Where a chunk sits in a local file: its data stream (qcow2 guest view) or its bytes. */
interface Location {
  file: OpenFile;
  stream: 'data' | 'residue' | 'bytes';
  offset: number;
  length: number;
}

interface OpenFile {
  path: string;
  index: BlobIndex;
  fh: FileHandle;
  img: Qcow2Image | null;
}

export class LocalSources {
  private readonly where = new Map<string, Location>();
  private readonly open: OpenFile[] = [];
  private constructor(private readonly cache: ClientCache | null) {}

  /**
   * Sources in order of preference: the files (e.g. the base image, then the
   * existing output file: in-place data), then the cache.
   */
  static async open(cache: ClientCache | null, files: LocalFile | null | Array<LocalFile | null>): Promise<LocalSources> {
    const s = new LocalSources(cache);
    for (const f of Array.isArray(files) ? files : [files]) {
      if (!f) continue;
      const fh = await open(f.path, 'r');
      const of: OpenFile = { path: f.path, index: f.index, fh, img: f.index instanceof Qcow2Index ? Qcow2Image.open(f.path) : null };
      s.open.push(of);
      s.add(of);
    }
    return s;
  }

  private add(f: OpenFile): void {
    const put = (k: string, loc: Location) => {
      if (!this.where.has(k)) this.where.set(k, loc);
    };
    const ix = f.index;
    if (ix instanceof Qcow2Index) {
      for (let i = 0; i < ix.data.count; i++) put(ix.data.rawDigestAt(i).toString('hex'), { file: f, stream: 'data', offset: ix.data.starts[i]!, length: ix.data.lengths[i]! });
      for (let i = 0; i < ix.residue.count; i++) put(ix.residue.rawDigestAt(i).toString('hex'), { file: f, stream: 'residue', offset: ix.residue.starts[i]!, length: ix.residue.lengths[i]! });
    } else {
      for (let i = 0; i < ix.count; i++) put(ix.rawDigestAt(i).toString('hex'), { file: f, stream: 'bytes', offset: ix.starts[i]!, length: ix.lengths[i]! });
    }
  }

  /** Which local file holds the chunk (hex digest), in the order given to open(); -1 for none. */
  fileOf(hex: string): number {
    const loc = this.where.get(hex);
    return loc ? this.open.indexOf(loc.file) : -1;
  }

  async inCache(hex: string): Promise<boolean> {
    return this.cache ? this.cache.chunks.has(digestFromRaw(Buffer.from(hex, 'hex'))) : false;
  }

  /**
   * Where a file holds the chunk, as file-ranges.ts ranges ([kind, offset,
   * length] triples) for a worker to read; null when no file has it.
   */
  spansOf(hex: string): { path: string; ranges: number[] } | null {
    const loc = this.where.get(hex);
    return loc ? { path: loc.file.path, ranges: rangesOf(loc) } : null;
  }

  /** Verified bytes of a chunk from a file or the cache; null when none has it. */
  async get(hex: string): Promise<Buffer | null> {
    const loc = this.where.get(hex);
    if (loc) {
      const b = await readLocation(loc);
      if (b && sha256Raw(b).toString('hex') === hex) return b;
    }
    if (!this.cache) return null;
    try {
      return await this.cache.chunks.get(digestFromRaw(Buffer.from(hex, 'hex')));
    } catch (e) {
      if (isSnapyardError(e, 'CHUNK_MISSING') || isSnapyardError(e, 'CHUNK_CORRUPT')) return null;
      throw e;
    }
  }

  async close(): Promise<void> {
    for (const f of this.open.splice(0)) {
      f.img?.close();
      await f.fh.close();
    }
  }
}

/** A location as file-ranges.ts ranges: [kind, offset, length] triples (qcow2 guest ranges, or the file's own). */
function rangesOf(loc: Location): number[] {
  const ix = loc.file.index;
  const ranges: number[] = [];
  if (loc.stream === 'data' && ix instanceof Qcow2Index) {
    for (const r of ix.guestRanges(loc.offset, loc.length)) ranges.push(RANGE_GUEST, r.guestOffset, r.length);
  } else if (loc.stream === 'residue' && ix instanceof Qcow2Index) {
    for (const r of ix.residueHostRanges(loc.offset, loc.length)) ranges.push(RANGE_FILE, r.hostOffset, r.length);
  } else {
    ranges.push(RANGE_FILE, loc.offset, loc.length);
  }
  return ranges;
}

async function readLocation(loc: Location): Promise<Buffer | null> {
  const out = Buffer.allocUnsafe(loc.length);
  const ranges = rangesOf(loc);
  try {
    let at = 0;
    for (let k = 0; k < ranges.length; k += 3) {
      const [kind, offset, length] = [ranges[k]!, ranges[k + 1]!, ranges[k + 2]!];
      if (kind === RANGE_GUEST) loc.file.img!.readGuestInto(out.subarray(at, at + length), offset, undefined);
      else if ((await loc.file.fh.read(out, at, length, offset)).bytesRead !== length) return null;
      at += length;
    }
    return at === loc.length ? out : null;
  } catch (e) {
    if (isSnapyardError(e)) return null;
    throw e;
  }
}

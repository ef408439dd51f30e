/**
 * Where a client finds chunk bytes without the network, in order: the local
 * base file (its index says which chunks it holds and where), then the cache.
 * Every chunk is verified (sha256) before it is used; a base file whose bytes
 * no longer match is simply not a source for that chunk.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { BlobIndex } from '../storage/blob-index.js';
import { digestFromRaw, sha256Raw } from '../storage/digest.js';
import { isSnapyardError } from '../storage/errors.js';
import { Qcow2Index } from '../storage/qcow2-index.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import type { ClientCache } from './cache.js';

export interface LocalFile {
  path: string;
  index: BlobIndex;
}

/** Where a chunk sits in a local file: its data stream (qcow2 guest view) or its bytes. */
interface Location {
  stream: 'data' | 'residue' | 'bytes';
  offset: number;
  length: number;
}

export class LocalSources {
  private readonly where = new Map<string, Location>();
  private img: Qcow2Image | null = null;
  private fh: FileHandle | null = null;

  private constructor(
    private readonly cache: ClientCache | null,
    readonly file: LocalFile | null,
  ) {
    if (!file) return;
    const ix = file.index;
    if (ix instanceof Qcow2Index) {
      for (let i = 0; i < ix.data.count; i++) this.where.set(ix.data.rawDigestAt(i).toString('hex'), { stream: 'data', offset: ix.data.starts[i]!, length: ix.data.lengths[i]! });
      for (let i = 0; i < ix.residue.count; i++) {
        const k = ix.residue.rawDigestAt(i).toString('hex');
        if (!this.where.has(k)) this.where.set(k, { stream: 'residue', offset: ix.residue.starts[i]!, length: ix.residue.lengths[i]! });
      }
    } else {
      for (let i = 0; i < ix.count; i++) this.where.set(ix.rawDigestAt(i).toString('hex'), { stream: 'bytes', offset: ix.starts[i]!, length: ix.lengths[i]! });
    }
  }

  static async open(cache: ClientCache | null, file: LocalFile | null): Promise<LocalSources> {
    const s = new LocalSources(cache, file);
    if (file) {
      s.fh = await open(file.path, 'r');
      if (file.index instanceof Qcow2Index) s.img = Qcow2Image.open(file.path);
    }
    return s;
  }

  /** True when the local file holds the chunk (hex digest). */
  inFile(hex: string): boolean {
    return this.where.has(hex);
  }

  async inCache(hex: string): Promise<boolean> {
    return this.cache ? this.cache.chunks.has(digestFromRaw(Buffer.from(hex, 'hex'))) : false;
  }

  /** Verified bytes of a chunk from the file or the cache; null when neither has it. */
  async get(hex: string): Promise<Buffer | null> {
    const loc = this.where.get(hex);
    if (loc) {
      const b = await this.readFile(loc);
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

  private async readFile(loc: Location): Promise<Buffer | null> {
    const out = Buffer.allocUnsafe(loc.length);
    const ix = this.file!.index;
    try {
      if (loc.stream === 'data' && ix instanceof Qcow2Index) {
        let at = 0;
        for (const r of ix.guestRanges(loc.offset, loc.length)) {
          this.img!.readGuestInto(out.subarray(at, at + r.length), r.guestOffset, undefined);
          at += r.length;
        }
        return at === loc.length ? out : null;
      }
      const ranges = loc.stream === 'residue' && ix instanceof Qcow2Index ? [...ix.residueHostRanges(loc.offset, loc.length)] : [{ hostOffset: loc.offset, length: loc.length }];
      let at = 0;
      for (const r of ranges) {
        const { bytesRead } = await this.fh!.read(out, at, r.length, r.hostOffset);
        if (bytesRead !== r.length) return null;
        at += r.length;
      }
      return at === loc.length ? out : null;
    } catch (e) {
      if (isSnapyardError(e)) return null;
      throw e;
    }
  }

  async close(): Promise<void> {
    this.img?.close();
    await this.fh?.close();
  }
}

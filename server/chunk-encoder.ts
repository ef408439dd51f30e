import type { BlobIndex } from '../storage/blob-index.js';
import { digestFromRaw, type Digest } from '../storage/digest.js';
import type { Store } from '../storage/open-store.js';
import { ENC_STORED, frameHeader } from '../storage/wire.js';

/** What the client holds, as the encoder needs it. */
export interface HaveContext {
  blobs: Digest[];
}

/**
 * Turns a chunk the client lacks into a wire frame (storage/wire.ts): the
 * stored form as it is (no recompression).
 */
export class ChunkEncoder {
  constructor(
    private readonly store: Store,
    private readonly indexOf: (blob: Digest) => Promise<BlobIndex | null>,
  ) {}

  async prepare(have: Digest[]): Promise<HaveContext> {
    const blobs: Digest[] = [];
    for (const d of have) if (await this.indexOf(d)) blobs.push(d);
    return { blobs };
  }

  async encode(raw: Buffer, _have: HaveContext): Promise<{ header: Buffer; payload: Buffer; rawLength: number }> {
    const digest: Digest = digestFromRaw(raw);
    const stored = await this.store.chunks.getStored(digest);
    return { header: frameHeader(raw, ENC_STORED, [], stored.byteLength), payload: stored, rawLength: stored.readUInt32LE(8) };
  }
}

/**
 * Checks a chunk index a client claims describes a blob (a push commit,
 * docs/delta-protocol.md) against what the store holds and the limits,
 * BEFORE anything rebuilds or hashes the blob: rebuilding costs the claimed
 * size, so the claim must be backed by chunks that exist and add up.
 *
 * - the blob is at most `maxBlobBytes`;
 * - every entry names a held chunk with the length the store has for it
 *   (a short chunk cannot stand for a long one);
 * - a qcow2 recipe's data ops read disjoint ranges of the data stream (a
 *   host byte comes from one guest byte; overlapping ops could repeat a
 *   small stream without bound);
 * - above `commitFreeBytes`, the blob is at most `maxCommitRepeat` times the
 *   bytes of its distinct chunks (one chunk repeated a million times is a
 *   few bytes to claim and a long time to hash).
 */
import type { BlobIndex } from './blob-index.js';
import { digestFromRaw, type Digest } from '../digest.js';
import { ChunkMissingError, SnapyardError } from '../errors.js';
import type { Limits } from '../limits.js';
import { OP_DATA } from './qcow2-index.js';

export interface ClaimFacts {
  distinctChunks: number;
  distinctBytes: number;
}

export function checkClaimedIndex(index: BlobIndex, rawLength: (d: Digest) => number | null, limits: Pick<Limits, 'maxBlobBytes' | 'maxCommitRepeat' | 'commitFreeBytes'>): ClaimFacts {
  const tooBig = (msg: string, detail: Record<string, unknown>) => new SnapyardError('LIMIT_EXCEEDED', msg, { detail: { ...detail, status: 413 } });
  if (index.size > limits.maxBlobBytes) {
    throw tooBig(`the index claims a blob of ${index.size} bytes; the limit is ${limits.maxBlobBytes}`, { size: index.size, limit: limits.maxBlobBytes });
  }
  const lengths = new Map<string, number>();
  for (const list of index.lists()) {
    for (let i = 0; i < list.count; i++) {
      const hex = list.rawDigestAt(i).toString('hex');
      const len = list.lengths[i]!;
      const seen = lengths.get(hex);
      if (seen === undefined) lengths.set(hex, len);
      else if (seen !== len) throw new SnapyardError('INDEX_INVALID', `chunk index: chunk sha256:${hex} is listed with lengths ${seen} and ${len}`);
    }
  }
  let distinctBytes = 0;
  for (const [hex, len] of lengths) {
    const d = digestFromRaw(Buffer.from(hex, 'hex'));
    const actual = rawLength(d);
    if (actual === null) throw new ChunkMissingError(d);
    if (actual !== len) throw new SnapyardError('INDEX_INVALID', `chunk index: ${d} is listed as ${len} bytes, the stored chunk has ${actual}`);
    distinctBytes += len;
  }
  if ('layout' in index) {
    const L = index.layout;
    const ops: Array<[number, number]> = [];
    for (let i = 0; i < L.opKinds.length; i++) if (L.opKinds[i] === OP_DATA) ops.push([L.opSources[i]!, L.opLengths[i]!]);
    ops.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ops.length; i++) {
      if (ops[i]![0] < ops[i - 1]![0] + ops[i - 1]![1]) throw new SnapyardError('INDEX_INVALID', `chunk index: data ops overlap at data-stream offset ${ops[i]![0]}`);
    }
  }
  if (index.size > limits.commitFreeBytes && index.size > limits.maxCommitRepeat * distinctBytes) {
    throw tooBig(
      `the index repeats its ${lengths.size} distinct chunks (${distinctBytes} bytes) into a ${index.size}-byte blob, more than ${limits.maxCommitRepeat} times over; ` +
        'push a sparse disk as qcow2, or raise the maxCommitRepeat limit',
      { size: index.size, distinctBytes, limit: limits.maxCommitRepeat },
    );
  }
  return { distinctChunks: lengths.size, distinctBytes };
}

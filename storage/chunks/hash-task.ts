import { createHash, type Hash } from 'node:crypto';
import type { HashAlgorithm } from '../digest.js';

/**
 * Stream hashing on a worker thread (the local store's chunk workers and the
 * remote store's codec workers both take it): the pieces of stream `stream`
 * in order, each in a buffer that goes back for reuse; `end` answers the
 * stream's digest. The worker keeps each open stream's hash state.
 */
export type HashTask = { op: 'hash'; stream: number; buf: Uint8Array; length: number; end: boolean; algorithm?: HashAlgorithm };
export type HashResult = { digest: string; buf: Uint8Array };

/** One piece of a stream, on the worker (`hashes`: its open streams). */
export function hashStep(hashes: Map<number, Hash>, t: HashTask): { result: HashResult; transfer: ArrayBuffer[] } {
  let h = hashes.get(t.stream);
  const algorithm = t.algorithm ?? 'sha256';
  if (!h) hashes.set(t.stream, (h = createHash(algorithm)));
  h.update(t.buf.subarray(0, t.length));
  let digest = '';
  if (t.end) {
    digest = `${algorithm}:${h.digest('hex')}`;
    hashes.delete(t.stream);
  }
  return { result: { digest, buf: t.buf }, transfer: [t.buf.buffer as ArrayBuffer] };
}

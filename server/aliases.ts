/**
 * sha512 digests on the OCI API. Blobs and manifests are stored under their
 * sha256 (chunks stay sha256 inside); a blob or manifest pushed under a
 * sha512 is also known by it (storage/meta/digest-aliases.ts), so every endpoint
 * that takes a digest accepts either and answers with the one it was asked.
 *
 * An upload under a sha512 is checked by reading the ingested (not yet
 * committed) blob back through the store: no per-session state, and the
 * bytes checked are the bytes that will be served.
 */
import { OciError } from './oci-error.js';
import type { RequestContext } from './context.js';
import { sha512OfStream, type AnyDigest, type Digest, type Sha512Digest } from '../storage/digest.js';
import type { IngestResult } from '../storage/blobs/blob-ingest.js';

/** The sha256 a digest names (itself, or what an alias was recorded for); null when unknown. */
export function canonicalDigest(ctx: RequestContext, d: AnyDigest): Promise<Digest | null> {
  return ctx.store.meta.resolveAlias(d);
}

/**
 * Checks an ingested, uncommitted blob against the sha512 the client named
 * (400 DIGEST_INVALID otherwise) and records the alias; the caller commits.
 */
export async function acceptSha512(ctx: RequestContext, r: IngestResult, want: Sha512Digest): Promise<void> {
  const chunks = ctx.store.chunks;
  async function* pieces(): AsyncGenerator<Uint8Array> {
    for await (const piece of ctx.store.blobs.read(r.index, 0, r.size)) {
      yield piece;
      chunks.release?.(piece);
    }
  }
  const got = await sha512OfStream(pieces());
  if (got !== want) throw new OciError(400, 'DIGEST_INVALID', `uploaded content hashes to ${got}, not ${want}`, { expected: want, actual: got });
  await ctx.store.meta.addAlias(want, r.digest);
}

/** A monolithic upload (POST ?digest=sha512:...): ingest, check the sha512, record it, commit. */
export async function ingestUnderSha512(ctx: RequestContext, name: string, source: AsyncIterable<Uint8Array>, want: Sha512Digest, expectSize?: number): Promise<void> {
  const lease = ctx.store.blobs.pins.lease();
  try {
    const r = await ctx.store.blobs.ingestUncommitted(source, { lease, ...(expectSize !== undefined ? { expectSize } : {}) });
    await acceptSha512(ctx, r, want);
    await ctx.store.blobs.commit(name, r);
  } finally {
    lease.release();
  }
}

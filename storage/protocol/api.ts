/**
 * The request and response bodies of snapyard's own endpoints (the delta
 * protocol, docs/delta-protocol.md, and the admin API, docs/admin-api.md),
 * as zod schemas: the server parses requests with them, the client parses
 * responses with them, so both sides read one definition. Responses are
 * checked for what the client relies on; fields added later pass through.
 */
import { z } from 'zod';
import { isDigest, type Digest } from '../digest.js';
import { SnapyardError } from '../errors.js';

export const digest = z.string().refine(isDigest, { message: 'must be sha256:<64 hex>' }).transform((s) => s as Digest);
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const nullableDigest = z.string().nullable();

// ---- the delta protocol ----

/** POST <name>/_delta */
export const deltaRequest = z.object({ target: z.string().min(1).max(300), have: z.array(digest).max(64).default([]) });
export const deltaAnswer = z.looseObject({
  manifest: z.looseObject({ digest: z.string(), mediaType: z.string(), size: z.number() }),
  blob: z.looseObject({ digest, size: z.number().int().nonnegative(), mediaType: z.string() }),
  index: z.looseObject({ digest, base: digest.nullable(), data: z.string() }),
  missing: z.looseObject({ chunks: z.number(), bytes: z.number() }),
});

/** POST <name>/_chunks */
export const chunksRequest = z.object({
  blob: digest,
  chunks: z.array(hex64).max(1 << 16),
  have: z.array(digest).max(64).default([]),
  estimate: z.boolean().default(false),
});
export const chunksEstimate = z.looseObject({ wireBytes: z.number() });

/** POST <name>/_missing (zstd compact index in; this out) */
export const missingAnswer = z.looseObject({
  session: z.string(),
  entries: z.number(),
  missing: z.array(z.number().int().nonnegative()),
  /** The upload forms the registry takes ('zstd-stream', 'records': storage/protocol/record-upload.ts); absent from older registries. */
  uploadForms: z.array(z.string()).optional(),
});

/**
 * POST <name>/_similar?session=<id>&have=<blob>[&have=...]: the body is the
 * sketches of a push session's new chunks (storage/delta/resemblance.ts
 * encodeSketch), each as a u32 LE length and its bytes. Answer: per sketch,
 * the raw digests (hex) of up to 3 chunks of the held blobs most like it, best first.
 */
export const similarAnswer = z.looseObject({ similar: z.array(z.array(hex64).max(3)) });

/** POST <name>/_commit */
export const commitRequest = z.object({ session: z.string().max(64), digest });
export const commitAnswer = z.looseObject({ digest, size: z.number(), indexDigest: digest, layout: z.enum(['qcow2', 'bytes']) });

/** GET <name>/_blobs/<digest>/manifests */
export const blobManifestsAnswer = z.looseObject({
  manifests: z.array(z.looseObject({ digest: z.string(), mediaType: z.string(), size: z.number(), artifactType: z.string().nullable() })),
});

// ---- the admin API ----

/** PUT <name>/_tags/<tag> */
export const tagRequest = z.object({ target: z.string({ error: 'body needs "target": a tag or a manifest digest' }).min(1).max(300) });
export const tagMove = z.looseObject({ repository: z.string(), tag: z.string(), old: nullableDigest, new: z.string() });
export const tagDeleted = z.looseObject({ repository: z.string(), tag: z.string(), old: z.string() });

/** POST <name>/_tags/<tag>/_rollback */
export const rollbackRequest = z.object({ steps: z.number().int().optional(), to: z.string().max(300).optional() });
export const rollbackAnswer = tagMove.extend({ steps: z.number().nullable() });

/** GET <name>/_tags/<tag>/_history */
export const historyAnswer = z.looseObject({
  repository: z.string(),
  tag: z.string(),
  current: nullableDigest,
  events: z.array(z.looseObject({ time: z.string(), old: nullableDigest, new: nullableDigest, source: z.string() })),
});

/** GET _admin/repositories */
export const repositoriesAnswer = z.looseObject({
  repositories: z.array(z.looseObject({ name: z.string(), created: z.string(), snapshots: z.number(), tags: z.number() })),
});

/** GET <name>/_snapshots */
export const snapshotsAnswer = z.looseObject({
  snapshots: z.array(
    z.looseObject({
      digest: z.string(),
      mediaType: z.string(),
      tags: z.array(z.string()),
      created: z.string(),
      blob: nullableDigest,
      size: z.number().nullable(),
      layout: z.enum(['qcow2', 'bytes']).nullable(),
      virtualSize: z.number().nullable(),
      storedBytes: z.number().nullable(),
      indexDigest: nullableDigest,
      base: z.looseObject({ subject: nullableDigest, blob: nullableDigest, backingFile: z.string().nullable() }).nullable(),
    }),
  ),
});

/** DELETE <name>/_manifests/<digest> */
export const manifestDeleted = z.looseObject({ repository: z.string(), digest: z.string(), removedTags: z.array(z.string()) });

/** POST <name>/_prune */
export const pruneRequest = z.object({ keep: z.number().int().nonnegative(), match: z.string().max(1000).optional(), dryRun: z.boolean().optional() });
export const pruneAnswer = z.looseObject({
  repository: z.string(),
  keep: z.number(),
  match: z.string().nullable(),
  dryRun: z.boolean(),
  kept: z.array(z.looseObject({ tag: z.string(), digest: z.string(), reason: z.enum(['newest', 'base']) })),
  removedTags: z.array(z.looseObject({ tag: z.string(), digest: z.string() })),
  removedManifests: z.array(z.string()),
});

const statsSummary = { snapshots: z.number(), logicalBytes: z.number(), storedBytes: z.number(), dedupRatio: z.number().nullable() };

/** GET <name>/_stats */
export const repoStatsAnswer = z.looseObject({
  repository: z.string(),
  ...statsSummary,
  perSnapshot: z.array(z.looseObject({ digest: z.string(), tags: z.array(z.string()), size: z.number(), storedBytes: z.number(), uniqueBytes: z.number() })),
  variants: z.array(
    z.looseObject({
      variant: z.string(),
      versions: z.array(z.looseObject({ tag: z.string(), version: z.number(), digest: z.string() })),
      deltas: z.array(z.looseObject({ from: z.string(), to: z.string(), bytes: z.number() })),
    }),
  ),
});

/** GET _admin/stats */
export const registryStatsAnswer = z.looseObject({
  logicalBytes: z.number(),
  storedBytes: z.number(),
  dedupRatio: z.number().nullable(),
  store: z.looseObject({ chunks: z.number(), storedBytes: z.number(), rawBytes: z.number() }),
  repositories: z.array(z.looseObject({ repository: z.string(), ...statsSummary })),
});

/** POST _admin/gc */
export const gcRequest = z.object({
  dryRun: z.boolean().optional(),
  graceSeconds: z.number().min(0).max(10 * 365 * 86400).optional(),
  minLive: z.number().min(0).max(1).optional(),
  /** Unused pack bytes allowed, as a fraction of live bytes; omitted: the server's default (0.1). */
  maxUnused: z.number().min(0).max(1000).optional(),
}).strict();

/** POST _admin/verify */
export const verifyRequest = z.object({ repair: z.boolean().optional() }).strict();

/** Checks an answer read some other way (a streamed request); REGISTRY_ERROR naming what is off. */
export function parseAnswer<T>(schema: z.ZodType<T>, v: unknown, what: string): T {
  const r = schema.safeParse(v);
  if (!r.success) throw new SnapyardError('REGISTRY_ERROR', `${what}: the registry answered something unexpected (${r.error.issues.slice(0, 3).map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')})`);
  return r.data;
}

export type DeltaAnswer = z.infer<typeof deltaAnswer>;
export type TagMove = z.infer<typeof tagMove>;
export type HistoryEntry = z.infer<typeof historyAnswer>['events'][number];
export type RepositoryInfo = z.infer<typeof repositoriesAnswer>['repositories'][number];
export type SnapshotInfo = z.infer<typeof snapshotsAnswer>['snapshots'][number];
export type PruneResult = z.infer<typeof pruneAnswer>;
export type RepoStats = z.infer<typeof repoStatsAnswer>;
export type RegistryStats = z.infer<typeof registryStatsAnswer>;

/**
 * GET /snapyard/v1/<name>/_snapshots/<tag|digest>: one snapshot for the web
 * page: what `snapyard inspect REF` reports (qcow2 header and allocation,
 * chunk statistics), its sizes in the repository, its lineage, and the exact
 * commands that fetch it (`snapyard pull`, `snapyard pod-init`).
 */
import { repo as repoNeeds, type Services } from '../route-table.js';
import type { RequestContext } from '../context.js';
import { parseReference } from '../names.js';
import { OciError } from '../oci-error.js';
import { chunkListStats } from '../../storage/blobs/chunk-stats.js';
import { Qcow2Index } from '../../storage/blobs/qcow2-index.js';
import { qcow2IndexFacts } from '../../storage/blobs/qcow2-index-facts.js';
import { clusterSizeFromPrefix, HEADER_PREFIX_LENGTH, parseHeader } from '../../storage/qcow2/format.js';
import type { BlobIndex } from '../../storage/blobs/blob-index.js';
import type { Store } from '../../storage/open-store.js';
import type { AdminRoute } from './types.js';
import { iso, json, NAME, repoOf } from './http.js';
import { lineageOf } from './snapshots.js';

async function readPrefix(store: Store, index: BlobIndex, n: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of store.blobs.read(index, 0, Math.min(n, index.size))) parts.push(b);
  return Buffer.concat(parts);
}

/** The qcow2 facts of `inspect REF` from the stored image: header (its first cluster), the chunk index's guest layout and chunks. */
async function qcow2Facts(store: Store, ix: Qcow2Index) {
  const cs = clusterSizeFromPrefix(await readPrefix(store, ix, HEADER_PREFIX_LENGTH), ix.size);
  const { chunks, ...image } = qcow2IndexFacts(parseHeader(await readPrefix(store, ix, cs), ix.size), ix);
  return { image, chunks };
}

async function snapshot(ctx: RequestContext, m: RegExpExecArray, svc: Services): Promise<Response> {
  const repo = await repoOf(ctx, m[1]!);
  const ref = parseReference(decodeURIComponent(m[2]!), { lookup: true });
  const meta = ctx.store.meta;
  const digest = ref.digest ?? (await meta.resolveTag(repo, ref.tag!));
  const v = await svc.views.view(ctx.store, repo);
  const man = v.manifests.find((x) => x.digest === digest);
  if (!digest || !man) throw new OciError(404, 'MANIFEST_UNKNOWN', `${repo}:${ref.tag ?? ref.digest} is not known`, { reference: ref.tag ?? ref.digest });
  const row = v.rows.get(man.digest);
  const tags = await meta.tagsOf(repo, man.digest);
  const rec = man.imageBlob ? await meta.getBlob(man.imageBlob) : null;
  let image: Record<string, unknown> | null = null;
  let chunks: Record<string, unknown> | null = null;
  if (rec) {
    const ix = await ctx.store.blobs.index(rec);
    if (ix instanceof Qcow2Index) {
      ({ image, chunks } = await qcow2Facts(ctx.store, ix));
    } else {
      image = { format: 'raw', size: ix.size };
      chunks = chunkListStats(ix.lists());
    }
  }
  const registry = ctx.url.origin;
  // The tag it was asked by, else its first tag, else its digest.
  const tag = ref.tag ?? tags[0];
  const name = tag !== undefined ? `${repo}:${tag}` : `${repo}@${man.digest}`;
  return json(200, {
    repository: repo,
    digest: man.digest,
    mediaType: man.mediaType,
    tags,
    created: iso(man.createdMs),
    blob: man.imageBlob,
    size: row?.size ?? null,
    virtualSize: row?.virtualSize ?? null,
    storedBytes: row?.storedBytes ?? null,
    uniqueBytes: row?.uniqueBytes ?? null,
    base: lineageOf(man),
    image,
    chunks,
    commands: {
      pull: `snapyard pull ${name} -o disk.qcow2 --registry ${registry}`,
      podInit: tag !== undefined ? `USE_PREBUILT_SNAPSHOT=true SNAPSHOT_REGISTRY=${registry}/${repo} SNAPSHOT_TAG=${tag} DISK=disk.qcow2 snapyard pod-init` : null,
    },
  });
}

export const snapshotRoute: AdminRoute = { name: 'admin.snapshot', method: 'GET', pattern: new RegExp(`^/snapyard/v1/${NAME}/_snapshots/([^/]+)$`), needs: repoNeeds('pull'), bodyLimit: 0, handle: snapshot };

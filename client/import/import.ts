/**
 * `snapyard import SRC REF`: the disk image inside a container image packaged
 * the old way (a qcow2 in a tar layer, gzip/zstd/uncompressed) becomes a
 * snapyard snapshot. Layers are scanned top first (the top layer wins, as in
 * the container's filesystem) until one holds the disk; the member is
 * streamed to a temporary file and pushed with client/push.ts (guest-view
 * chunking, only the chunks the registry lacks are sent).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapyardError } from '../../storage/errors.js';
import type { ClientCache } from '../cache.js';
import { push, type PushResult } from '../push.js';
import type { Registry } from '../registry.js';
import type { Platform } from './image-manifest.js';
import type { ImageSource } from './image-source.js';
import { scanLayer } from './layer-scan.js';
import { describeRules, memberRules } from './member-rules.js';

/** Default bound on one layer's decompressed size. */
export const DEFAULT_MAX_LAYER_BYTES = 256 * 1024 ** 3;

export interface ImportOptions {
  registry: Registry;
  cache: ClientCache | null;
  platform: Platform;
  /** The member to take (else the usual places: member-rules.ts). */
  path?: string;
  tmpDir: string;
  maxLayerBytes?: number;
  onPhase?: (phase: string) => void;
}

export interface ImportSummary {
  source: string;
  sourceManifest: string;
  layer: string;
  member: string;
  ref: string;
  push: PushResult;
}

/** Imports the image under `reference` on `src` as `repo:tag`. */
export async function importImage(src: ImageSource, reference: string | null, repo: string, tag: string, o: ImportOptions): Promise<ImportSummary> {
  const what = `${src.name}${reference ? `${reference.startsWith('sha256:') ? '@' : ':'}${reference}` : ''}`;
  o.onPhase?.(`reading ${what}`);
  const img = await src.image(reference, o.platform);
  const rules = memberRules(reference && !reference.startsWith('sha256:') ? reference : null, o.path);
  const work = await mkdtemp(join(o.tmpDir, 'snapyard-import-'));
  try {
    for (let i = img.layers.length - 1; i >= 0; i--) {
      const layer = img.layers[i]!;
      o.onPhase?.(`scanning layer ${layer.label}`);
      const found = await scanLayer(layer, rules, work, o.maxLayerBytes ?? DEFAULT_MAX_LAYER_BYTES);
      if (!found) continue;
      o.onPhase?.(`pushing ${found.path}`);
      const result = await push({ repo, reference: tag, tag }, found.file, { registry: o.registry, cache: o.cache, ...(o.onPhase ? { onPhase: o.onPhase } : {}) });
      return { source: what, sourceManifest: img.manifestDigest, layer: layer.label, member: `/${found.path}`, ref: `${repo}:${tag}`, push: result };
    }
    throw new SnapyardError('NOT_FOUND', `${what}: none of its ${img.layers.length} layers holds a disk image (looked for ${describeRules(rules)}; name the file with --path)`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

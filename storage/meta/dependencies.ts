/**
 * What a snapshot needs to stay pullable: its OCI subject (the base's
 * manifest), the manifests an index lists, and the manifests whose image is
 * its base blob (annotation io.snapyard.base.blob). Used by prune (never
 * remove what a kept snapshot depends on) and rm (refuse to remove a base).
 */
import type { Digest } from '../digest.js';
import type { ManifestSummary } from './metadata.js';

export interface Lineage {
  /** The OCI subject: the base's manifest. */
  subject: Digest | null;
  /** The base image's blob (annotation io.snapyard.base.blob). */
  blob: Digest | null;
  backingFile: string | null;
}

/** The image a manifest carries (stored with it: manifest-facts.ts); null for an index. */
export function imageBlob(m: ManifestSummary): Digest | null {
  return m.imageBlob;
}

export function lineageOf(m: ManifestSummary): Lineage | null {
  if (!m.subject && !m.baseBlob) return null;
  return { subject: m.subject, blob: m.baseBlob, backingFile: m.backingFile };
}

export class Dependencies {
  private readonly deps = new Map<Digest, Digest[]>();

  /** From listing metadata only (no manifest is parsed). */
  constructor(manifests: ManifestSummary[]) {
    const byBlob = new Map<Digest, Digest[]>();
    for (const m of manifests) {
      const b = imageBlob(m);
      if (b) byBlob.set(b, [...(byBlob.get(b) ?? []), m.digest]);
    }
    const known = new Set(manifests.map((m) => m.digest));
    for (const m of manifests) {
      const out = new Set<Digest>();
      const base = lineageOf(m);
      if (base?.subject && known.has(base.subject)) out.add(base.subject);
      for (const d of base?.blob ? byBlob.get(base.blob) ?? [] : []) out.add(d);
      for (const d of m.children) if (known.has(d)) out.add(d);
      out.delete(m.digest);
      this.deps.set(m.digest, [...out]);
    }
  }

  /** `roots` and everything they depend on, transitively. */
  closure(roots: Iterable<Digest>): Set<Digest> {
    const seen = new Set<Digest>();
    const todo = [...roots];
    while (todo.length > 0) {
      const d = todo.pop()!;
      if (seen.has(d)) continue;
      seen.add(d);
      todo.push(...(this.deps.get(d) ?? []));
    }
    return seen;
  }

  /** Manifests that depend directly on `digest`. */
  dependents(digest: Digest): Digest[] {
    return [...this.deps].filter(([, ds]) => ds.includes(digest)).map(([d]) => d);
  }
}

import type { Digest } from '../digest.js';
import type { TagEvent } from './metadata.js';

/** Sources recorded with tag moves made through the admin API. */
export const SOURCE = { tag: 'tag', rollback: 'rollback', rm: 'rm', prune: 'prune' } as const;

/**
 * A tag's versions, oldest first, replayed from its moves (given newest
 * first, as Metadata.tagHistory returns them). A move to a new digest pushes
 * a version; a rollback pops back to the nearest earlier version with its
 * digest (so rolling back twice goes two versions back, not back and forth),
 * and pushes like any move when its target is not an earlier version (a
 * `--to` elsewhere). Removals are not versions. The last element is the
 * current version while the tag exists.
 */
export function tagVersions(newestFirst: TagEvent[]): Digest[] {
  const stack: Digest[] = [];
  for (let i = newestFirst.length - 1; i >= 0; i--) {
    const e = newestFirst[i]!;
    if (e.newDigest === null) continue;
    if (e.source === SOURCE.rollback) {
      const at = stack.length > 1 ? stack.lastIndexOf(e.newDigest, stack.length - 2) : -1;
      if (at >= 0) {
        stack.length = at + 1;
        continue;
      }
    }
    if (stack[stack.length - 1] !== e.newDigest) stack.push(e.newDigest);
  }
  return stack;
}

/**
 * What `snapyard import` reads from, parsed from its SRC argument (the
 * transports skopeo names the same way):
 *   docker://HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry speaking the distribution API
 *   oci:DIR[:TAG]                             an OCI image layout directory
 *   oci-archive:FILE[:TAG]                    a tar of an OCI image layout
 *   docker-archive:FILE[:REPO:TAG]            `docker save` output
 */
import { isDigest } from '../../storage/digest.js';
import { SnapyardError } from '../../storage/errors.js';
import { isRepoName, TAG_RE } from '../../storage/protocol/ref-grammar.js';

export type SourceSpec =
  | { kind: 'docker'; host: string; repo: string; reference: string | null }
  | { kind: 'oci'; dir: string; tag: string | null }
  | { kind: 'oci-archive'; file: string; tag: string | null }
  | { kind: 'docker-archive'; file: string; tag: string | null };

function bad(src: string, why: string): SnapyardError {
  return new SnapyardError('INVALID_ARGUMENT', `import source ${JSON.stringify(src)}: ${why} (docker://HOST/REPO:TAG, oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE)`);
}

/** `PATH[:TAG]` where PATH may itself hold colons only before the last one. */
function pathAndTag(rest: string): { path: string; tag: string | null } {
  const colon = rest.lastIndexOf(':');
  if (colon > 0 && !rest.slice(colon + 1).includes('/')) return { path: rest.slice(0, colon), tag: rest.slice(colon + 1) };
  return { path: rest, tag: null };
}

export function parseSource(src: string): SourceSpec {
  const m = /^(docker|oci|oci-archive|docker-archive):(.*)$/.exec(src);
  if (!m) throw bad(src, 'unknown transport');
  const [, transport, rest] = m as unknown as [string, string, string];
  if (transport === 'docker') {
    if (!rest.startsWith('//')) throw bad(src, 'docker: sources are docker://HOST/REPO:TAG');
    const body = rest.slice(2);
    const slash = body.indexOf('/');
    if (slash <= 0) throw bad(src, 'no registry host');
    const host = body.slice(0, slash);
    let name = body.slice(slash + 1);
    let reference: string | null = null;
    const at = name.indexOf('@');
    if (at >= 0) {
      reference = name.slice(at + 1);
      name = name.slice(0, at);
      if (!isDigest(reference)) throw bad(src, `${reference} is not a digest`);
    } else {
      const colon = name.lastIndexOf(':');
      if (colon >= 0) {
        reference = name.slice(colon + 1);
        name = name.slice(0, colon);
        if (!TAG_RE.test(reference)) throw bad(src, `${JSON.stringify(reference)} is not a tag`);
      }
    }
    if (!isRepoName(name)) throw bad(src, `${JSON.stringify(name)} is not a repository name`);
    return { kind: 'docker', host, repo: name, reference };
  }
  if (rest === '') throw bad(src, 'no path');
  if (transport === 'docker-archive') {
    // FILE[:REPO:TAG]: the tag part is the last `repo:tag` after the file (files rarely hold colons).
    const first = rest.indexOf(':');
    if (first > 0) return { kind: 'docker-archive', file: rest.slice(0, first), tag: rest.slice(first + 1) };
    return { kind: 'docker-archive', file: rest, tag: null };
  }
  const { path, tag } = pathAndTag(rest);
  if (tag !== null && !TAG_RE.test(tag)) throw bad(src, `${JSON.stringify(tag)} is not a tag`);
  return transport === 'oci' ? { kind: 'oci', dir: path, tag } : { kind: 'oci-archive', file: path, tag };
}

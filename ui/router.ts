/** A hash router: #/ repositories, #/r/REPO, #/r/REPO/lineage, #/r/REPO/tag/TAG, #/r/REPO/s/REF, #/status, #/login. */
import { useEffect, useState } from 'preact/hooks';

export type Route =
  | { page: 'repos' }
  | { page: 'repo'; repo: string }
  | { page: 'lineage'; repo: string }
  | { page: 'history'; repo: string; tag: string }
  | { page: 'snapshot'; repo: string; ref: string }
  | { page: 'status' }
  | { page: 'login' };

export function parse(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '').map(decodeURIComponent);
  if (parts[0] === 'status') return { page: 'status' };
  if (parts[0] === 'login') return { page: 'login' };
  if (parts[0] === 'r' && parts[1]) {
    const repo = parts[1];
    if (parts[2] === 'lineage') return { page: 'lineage', repo };
    if (parts[2] === 'tag' && parts[3]) return { page: 'history', repo, tag: parts[3] };
    if (parts[2] === 's' && parts[3]) return { page: 'snapshot', repo, ref: parts[3] };
    return { page: 'repo', repo };
  }
  return { page: 'repos' };
}

const e = encodeURIComponent;
export const href = {
  repos: () => '#/',
  repo: (repo: string) => `#/r/${e(repo)}`,
  lineage: (repo: string) => `#/r/${e(repo)}/lineage`,
  history: (repo: string, tag: string) => `#/r/${e(repo)}/tag/${e(tag)}`,
  snapshot: (repo: string, ref: string) => `#/r/${e(repo)}/s/${e(ref)}`,
  status: () => '#/status',
  login: () => '#/login',
};

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const on = () => setRoute(parse(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

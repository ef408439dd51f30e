/**
 * The client side of registry authentication: Basic, and the Docker/OCI
 * bearer token flow (a 401 names the token endpoint and the scope; the
 * client asks it for a token with its credentials, or anonymously, caches
 * the token per repository until shortly before it expires, and retries).
 */
import { SnapyardError } from '../storage/errors.js';
import type { Credentials } from './credentials.js';

export interface Challenge {
  scheme: 'basic' | 'bearer';
  realm?: string;
  service?: string;
  scope?: string;
  error?: string;
}

export function parseChallenge(h: string | string[] | undefined): Challenge | null {
  const v = Array.isArray(h) ? h.find((x) => /^bearer /i.test(x)) ?? h[0] : h;
  if (!v) return null;
  const m = /^(\w+)\s*(.*)$/s.exec(v.trim());
  if (!m) return null;
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'basic' && scheme !== 'bearer') return null;
  const c: Challenge = { scheme };
  for (const p of m[2]!.matchAll(/(\w+)="([^"]*)"/g)) {
    const k = p[1]!.toLowerCase();
    if (k === 'realm' || k === 'service' || k === 'scope' || k === 'error') c[k] = p[2]!;
  }
  return c;
}

/** The repository a request path is about ('' for registry-wide endpoints): tokens are cached per repository. */
export function repoOfPath(path: string): string {
  const m = /^\/v2\/(.+?)\/(?:blobs|manifests|tags|referrers)\//.exec(path) ?? /^\/snapyard\/v1\/([a-z0-9].*?)\/_/.exec(path);
  return m ? m[1]! : '';
}

/** Merges scope strings: the same resource's actions are unioned. */
export function mergeScopes(scopes: string[]): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const s of scopes.flatMap((x) => x.split(' ')).filter((x) => x !== '')) {
    const last = s.lastIndexOf(':');
    if (last <= 0) continue;
    const res = s.slice(0, last);
    const set = byResource.get(res) ?? new Set<string>();
    for (const a of s.slice(last + 1).split(',')) if (a) set.add(a);
    byResource.set(res, set);
  }
  return [...byResource].map(([r, a]) => `${r}:${[...a].join(',')}`);
}

/** Fetches a URL with headers: { status, body text } (the registry client supplies it, with its TLS settings). */
export type TokenFetch = (url: URL, headers: Record<string, string>) => Promise<{ status: number; text: string }>;

interface Token {
  value: string;
  expiresAt: number;
  /** The lifetime the registry gave it, in ms. */
  ttlMs: number;
  scopes: string[];
}

/** A token with less than this left (15 s, or a tenth of a short lifetime) is not used: a new one is fetched first. */
const minLeft = (t: Token) => Math.min(15_000, t.ttlMs / 10);

export class Authorizer {
  private challenge: Challenge | null = null;
  private readonly tokens = new Map<string, Token>();
  private readonly pending = new Map<string, Promise<Token>>();

  constructor(
    private readonly creds: Credentials | null,
    private readonly fetchToken: TokenFetch,
  ) {}

  /** Has a 401 told us how this registry authenticates? */
  get known(): boolean {
    return this.challenge !== null;
  }

  private basic(): string | undefined {
    return this.creds ? `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password}`).toString('base64')}` : undefined;
  }

  /** The Authorization header for a request about repository `key`, if any is known to be needed. */
  async header(key: string): Promise<string | undefined> {
    const c = this.challenge;
    if (!c) return undefined;
    if (c.scheme === 'basic') return this.basic();
    const t = this.tokens.get(key);
    if (!t) return undefined;
    const left = t.expiresAt - Date.now();
    if (left > minLeft(t)) {
      // In its last third the next one is fetched in the background: a long-lived client (a pod's
      // prefetch, a build job) never waits on a token round trip mid-run.
      if (left < t.ttlMs / 3) this.obtain(key, t.scopes).catch(() => {});
      return `Bearer ${t.value}`;
    }
    return `Bearer ${(await this.obtain(key, t.scopes)).value}`;
  }

  /** Makes sure a token for `scope` is held before a request whose body cannot be sent twice. */
  async prepare(key: string, scope: string): Promise<void> {
    if (this.challenge?.scheme !== 'bearer') return;
    const t = this.tokens.get(key);
    const want = mergeScopes([...(t?.scopes ?? []), scope]);
    if (t && want.length === t.scopes.length && want.every((s) => t.scopes.includes(s)) && t.expiresAt - Date.now() > minLeft(t)) return;
    await this.obtain(key, want);
  }

  /** Learns from a 401; true when a retry with new credentials may succeed. */
  async unauthorized(key: string, wwwAuthenticate: string | string[] | undefined, sent: string | undefined): Promise<boolean> {
    const c = parseChallenge(wwwAuthenticate);
    if (!c) return false;
    this.challenge = c;
    if (c.scheme === 'basic') return this.creds !== null && sent === undefined;
    const have = this.tokens.get(key);
    const want = mergeScopes([...(have?.scopes ?? []), c.scope ?? '']);
    // The same token, the same scopes: asking again would give the same answer.
    if (have && sent === `Bearer ${have.value}` && want.length === have.scopes.length && want.every((s) => have.scopes.includes(s)) && c.error !== 'invalid_token') return false;
    await this.obtain(key, want);
    return true;
  }

  private obtain(key: string, scopes: string[]): Promise<Token> {
    const id = `${key}\n${scopes.join(' ')}`;
    let p = this.pending.get(id);
    if (!p) {
      p = this.request(scopes).finally(() => this.pending.delete(id));
      this.pending.set(id, p);
    }
    return p.then((t) => {
      // A background refresh of fewer scopes does not replace a token that grants more and is still good.
      const cur = this.tokens.get(key);
      if (!cur || cur.scopes.every((s) => t.scopes.includes(s)) || cur.expiresAt - Date.now() <= minLeft(cur)) this.tokens.set(key, t);
      return t;
    });
  }

  private async request(scopes: string[]): Promise<Token> {
    const c = this.challenge!;
    if (!c.realm) throw new SnapyardError('REGISTRY_ERROR', 'the registry asked for a bearer token but named no token endpoint (realm)');
    let url: URL;
    try {
      url = new URL(c.realm);
    } catch {
      throw new SnapyardError('REGISTRY_ERROR', `the registry's token endpoint ${JSON.stringify(c.realm)} is not a URL`);
    }
    if (c.service) url.searchParams.set('service', c.service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const headers: Record<string, string> = {};
    const b = this.basic();
    if (b) headers.authorization = b;
    const r = await this.fetchToken(url, headers);
    if (r.status === 401) throw new SnapyardError('UNAUTHORIZED', `the registry refused the credentials${this.creds ? ` of ${this.creds.username}` : ' (none given: use --creds, SNAPYARD_USERNAME/SNAPYARD_PASSWORD or a Docker config file)'}`);
    if (r.status !== 200) throw new SnapyardError('REGISTRY_ERROR', `token endpoint ${url.origin}${url.pathname} answered ${r.status}`);
    let j: { token?: string; access_token?: string; expires_in?: number };
    try {
      j = JSON.parse(r.text) as typeof j;
    } catch {
      throw new SnapyardError('REGISTRY_ERROR', 'the token endpoint answered something that is not JSON');
    }
    const value = j.token ?? j.access_token;
    if (typeof value !== 'string' || value === '') throw new SnapyardError('REGISTRY_ERROR', 'the token endpoint answered without a token');
    const ttl = typeof j.expires_in === 'number' && j.expires_in > 0 ? j.expires_in : 60;
    return { value, expiresAt: Date.now() + ttl * 1000, ttlMs: ttl * 1000, scopes };
  }
}

/**
 * Who is calling, and may they do what the route needs. Basic credentials
 * (checked against the htpasswd file) and bearer tokens from our token
 * endpoint are both accepted; a caller without credentials is anonymous.
 * Refusals follow distribution: 401 with a Bearer challenge naming the scope
 * to ask for (also when a token lacks it), 403 DENIED when a user who logged
 * in with Basic may not.
 */
import { OciError } from '../oci-error.js';
import { AccessPolicy, formatScope, type RepoAction, type Resource } from './access.js';
import type { Htpasswd } from './htpasswd.js';
import { TokenIssuer, type TokenClaims } from './tokens.js';

/** What a route needs: nothing, any valid login (the /v2/ base), or access to a resource. */
export type Need = { type: 'public' } | { type: 'login' } | Resource;

export interface Principal {
  user: string | null;
  /** open: auth is off (everything allowed). */
  via: 'open' | 'anonymous' | 'basic' | 'bearer';
  token?: TokenClaims;
}

export interface AuthConfig {
  /** null: no authentication, the registry is open (local development). */
  htpasswd: Htpasswd | null;
  policy?: AccessPolicy;
  tokens?: TokenIssuer;
  /** The token endpoint's absolute URL for challenges; default: this server's /token as the request reached it. */
  realm?: string;
  service?: string;
}

export class Authenticator {
  private currentPolicy: AccessPolicy;
  readonly tokens: TokenIssuer;
  private readonly tokenCache = new Map<string, { claims: TokenClaims; exp: number }>();

  constructor(private readonly cfg: AuthConfig) {
    this.currentPolicy = cfg.policy ?? new AccessPolicy();
    this.tokens = cfg.tokens ?? new TokenIssuer(cfg.service ?? 'snapyard');
  }

  get policy(): AccessPolicy {
    return this.currentPolicy;
  }

  /** Swaps the access rules (the access file re-read on SIGHUP); tokens already issued keep their grants until they expire. */
  setPolicy(p: AccessPolicy): void {
    this.currentPolicy = p;
  }

  /** Re-reads the htpasswd file now (it is also re-read when it changes). */
  reloadUsers(): void {
    this.cfg.htpasswd?.reload();
  }

  get enabled(): boolean {
    return this.cfg.htpasswd !== null;
  }

  get service(): string {
    return this.tokens.service;
  }

  realmFor(url: URL): string {
    return this.cfg.realm ?? `${url.origin}/token`;
  }

  /** Checks Basic credentials (null: wrong or unknown user). */
  async checkBasic(header: string | null | undefined): Promise<string | null | 'none'> {
    if (!header || !/^basic /i.test(header)) return 'none';
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon <= 0 || !this.cfg.htpasswd) return null;
    const user = decoded.slice(0, colon);
    return (await this.cfg.htpasswd.verify(user, decoded.slice(colon + 1))) ? user : null;
  }

  /** The caller behind a request's Authorization header; 401 for credentials that do not check out. */
  async identify(authorization: string | undefined, url: URL): Promise<Principal> {
    if (!this.enabled) return { user: null, via: 'open' };
    if (!authorization) return { user: null, via: 'anonymous' };
    if (/^bearer /i.test(authorization)) {
      const claims = await this.verifyToken(authorization.slice(7).trim());
      if (!claims) throw this.challenge(url, [], 'invalid_token', 'the bearer token is invalid or expired');
      return { user: claims.user, via: 'bearer', token: claims };
    }
    const user = await this.checkBasic(authorization);
    if (user === 'none') throw this.challenge(url, [], undefined, 'unsupported authorization scheme');
    if (user === null) throw this.challenge(url, [], undefined, 'invalid username or password');
    return { user, via: 'basic' };
  }

  private async verifyToken(token: string): Promise<TokenClaims | null> {
    const now = Date.now();
    const hit = this.tokenCache.get(token);
    if (hit && hit.exp > now) return hit.claims;
    const claims = await this.tokens.verify(token);
    if (!claims) return null;
    if (this.tokenCache.size >= 4096) this.tokenCache.clear();
    // Remembered for 30 s at most, and never past the token's own expiry.
    const kept = { user: claims.user, access: claims.access };
    this.tokenCache.set(token, { claims: kept, exp: Math.min(now + 30_000, claims.expiresAtMs) });
    return kept;
  }

  /** May `p` take `action` on `repo`? */
  can(p: Principal, repo: string, action: RepoAction): boolean {
    return this.allows(p, { type: 'repository', name: repo, actions: [action] });
  }

  /** Lists only what the caller may pull (the catalog, repository listings). */
  mayPull(p: Principal, repo: string): boolean {
    if (p.via === 'open') return true;
    return this.policy.repoActions(p.user, repo).has('pull');
  }

  private allows(p: Principal, r: Resource): boolean {
    if (p.via === 'open') return true;
    if (p.via === 'bearer') return tokenCovers(p.token!.access, r);
    const g = this.policy.grant(p.user, r);
    return g !== null && g.actions.length === r.actions.length;
  }

  /** Throws the 401/403 a request gets when `p` lacks what the route needs. */
  authorize(p: Principal, needs: Need[], url: URL): void {
    if (p.via === 'open') return;
    const missing: Resource[] = [];
    for (const n of needs) {
      if (n.type === 'public') continue;
      if (n.type === 'login') {
        if (p.via === 'anonymous') throw this.challenge(url, [], undefined, 'authentication required');
        continue;
      }
      if (!this.allows(p, n)) missing.push(n);
    }
    if (missing.length === 0) return;
    if (p.via === 'basic') {
      throw new OciError(403, 'DENIED', `${p.user} may not ${missing.map(formatScope).join(' ')}`, missing.map(formatScope));
    }
    throw this.challenge(url, missing, p.via === 'bearer' ? 'insufficient_scope' : undefined, p.via === 'bearer' ? 'the token does not grant this' : 'authentication required');
  }

  challenge(url: URL, scopes: Resource[], error: string | undefined, message: string): OciError {
    let h = `Bearer realm="${this.realmFor(url)}",service="${this.service}"`;
    if (scopes.length > 0) h += `,scope="${scopes.map(formatScope).join(' ')}"`;
    if (error) h += `,error="${error}"`;
    return new OciError(401, 'UNAUTHORIZED', message, scopes.length > 0 ? scopes.map(formatScope) : undefined, { 'WWW-Authenticate': h });
  }
}

function tokenCovers(access: Resource[], r: Resource): boolean {
  return access.some((a) => a.type === r.type && a.name === r.name && r.actions.every((x) => (a.actions as string[]).includes(x) || (a.actions as string[]).includes('*')));
}

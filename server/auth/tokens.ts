/**
 * Short-lived bearer tokens (distribution's token spec): a JWT signed with
 * HS256 whose `access` claim lists the granted scopes. Replicas that share a
 * secret (`--token-secret FILE`) accept each other's tokens; without one
 * every process draws its own and tokens live only as long as it does.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';
import type { Resource } from './access.js';

export const ISSUER = 'snapyard';

export interface TokenClaims {
  /** The user the token was issued to; null for an anonymous token. */
  user: string | null;
  access: Resource[];
}

export class TokenIssuer {
  private readonly key: Uint8Array;

  constructor(
    readonly service: string,
    secret?: Uint8Array,
    readonly ttlSeconds = 300,
  ) {
    this.key = secret && secret.byteLength > 0 ? secret : randomBytes(32);
  }

  async issue(claims: TokenClaims): Promise<{ token: string; expiresIn: number; issuedAt: string }> {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({ access: claims.access })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(ISSUER)
      .setSubject(claims.user ?? '')
      .setAudience(this.service)
      .setIssuedAt(now)
      .setNotBefore(now - 5)
      .setExpirationTime(now + this.ttlSeconds)
      .setJti(randomUUID())
      .sign(this.key);
    return { token, expiresIn: this.ttlSeconds, issuedAt: new Date(now * 1000).toISOString() };
  }

  /** The claims of a valid token of ours, or null (bad signature, expired, another service's). */
  async verify(token: string): Promise<(TokenClaims & { expiresAtMs: number }) | null> {
    try {
      const { payload } = await jwtVerify(token, this.key, { issuer: ISSUER, audience: this.service, algorithms: ['HS256'], clockTolerance: 5 });
      const access = Array.isArray(payload.access) ? (payload.access as Resource[]) : [];
      // jwtVerify accepts up to the tolerance past exp; so does whoever remembers this answer.
      return { user: payload.sub ? payload.sub : null, access, expiresAtMs: ((payload.exp ?? 0) + 5) * 1000 };
    } catch {
      return null;
    }
  }
}

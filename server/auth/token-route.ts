/**
 * GET /token: the token endpoint of the Docker/OCI token flow. Basic
 * credentials in (none: an anonymous token), a short-lived JWT out carrying
 * the part of each requested scope the caller is granted.
 */
import { respond } from '../context.js';
import { OciError } from '../oci-error.js';
import { parseScope, type Resource } from './access.js';
import type { Authenticator } from './authenticator.js';

const MAX_SCOPES = 64;

export async function issueToken(auth: Authenticator, url: URL, authorization: string | undefined): Promise<Response> {
  const q = url.searchParams;
  const service = q.get('service');
  if (service !== null && service !== auth.service) {
    throw new OciError(400, 'UNSUPPORTED', `this token endpoint serves ${JSON.stringify(auth.service)}, not ${JSON.stringify(service.slice(0, 100))}`);
  }
  let user: string | null = null;
  if (authorization) {
    const who = await auth.checkBasic(authorization);
    if (who === null || who === 'none') throw auth.challenge(url, [], undefined, 'invalid username or password');
    user = who;
  }
  const asked = q.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
  if (asked.length > MAX_SCOPES) throw new OciError(400, 'UNSUPPORTED', `at most ${MAX_SCOPES} scopes per token`);
  const access: Resource[] = [];
  for (const s of asked) {
    const r = parseScope(s);
    if (!r) continue; // unknown scopes are left out, as distribution does
    const g = auth.enabled ? auth.policy.grant(user, r) : r;
    if (!g) continue;
    const same = access.find((a) => a.type === g.type && a.name === g.name);
    if (same) same.actions = [...new Set([...same.actions, ...g.actions])] as typeof same.actions;
    else access.push(g);
  }
  const t = await auth.tokens.issue({ user, access });
  const body = { token: t.token, access_token: t.token, expires_in: t.expiresIn, issued_at: t.issuedAt };
  return respond(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }, JSON.stringify(body));
}

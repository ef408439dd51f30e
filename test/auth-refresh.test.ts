/**
 * The client's bearer tokens over a long run: a token is used until its last
 * third, then the next one is fetched in the background while requests go on
 * with the current one, so a long-lived client (a pod's prefetch, the load
 * bench) never waits on a token round trip, and never fetches one per request.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { cliOk } from './helpers/cli.js';
import { EMPTY_CONFIG, OCI_MANIFEST, prng, sha } from './helpers/oci.js';
import { Authenticator } from '../server/auth/authenticator.js';
import { AccessPolicy } from '../server/auth/access.js';
import { Htpasswd } from '../server/auth/htpasswd.js';
import { TokenIssuer } from '../server/auth/tokens.js';
import { Registry } from '../client/registry.js';

let dir: string;
let s: TestServer;
const lines: Array<{ route: string | null; status: number }> = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'snapyard-auth-refresh-'));
  const htpasswd = join(dir, 'htpasswd');
  await cliOk(['passwd', htpasswd, 'alice'], { input: 'alice-pw\n' });
  writeFileSync(join(dir, 'access.yaml'), 'rules:\n  - users: [alice]\n    repositories: ["*"]\n    actions: [pull, push]\n');
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as { route: string | null; status: number });
      done();
    },
  });
  // Tokens live 3 s: the client's old rule (a new token when less than 15 s is left) fetched one per request.
  const auth = new Authenticator({ htpasswd: new Htpasswd(htpasswd), policy: AccessPolicy.fromFile(join(dir, 'access.yaml')), tokens: new TokenIssuer('snapyard', undefined, 3) });
  s = await startTestServer({ auth, logger: pino(sink) });
  const layer = prng(4096, 7);
  const basic = `Basic ${Buffer.from('alice:alice-pw').toString('base64')}`;
  for (const [d, b] of [[sha(layer), layer], [EMPTY_CONFIG.digest, Buffer.from('{}')]] as const) {
    const r = await fetch(`${s.url}/v2/win98/blobs/uploads/?digest=${d}`, { method: 'POST', body: b, headers: { authorization: basic, 'content-type': 'application/octet-stream' } });
    expect(r.status).toBe(201);
  }
  const m = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [{ mediaType: 'application/octet-stream', digest: sha(layer), size: layer.length }] });
  expect((await fetch(`${s.url}/v2/win98/manifests/base`, { method: 'PUT', body: m, headers: { authorization: basic, 'content-type': OCI_MANIFEST } })).status).toBe(201);
}, 60_000);

afterAll(async () => {
  await s?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('a long-lived client refreshes its token in the background in its last third: no 401 after the first, no token per request', async () => {
  lines.length = 0;
  const reg = new Registry(s.url, { creds: { username: 'alice', password: 'alice-pw' } });
  let requests = 0;
  try {
    const end = Date.now() + 7_000;
    while (Date.now() < end) {
      await reg.getManifest('win98', 'base');
      requests++;
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await reg.close();
  }
  const manifestGets = lines.filter((l) => l.route?.startsWith('manifest'));
  const tokens = lines.filter((l) => l.route === 'token');
  // Every manifest GET but the first (which learns the challenge) was answered on the first try.
  expect(manifestGets.filter((l) => l.status === 401)).toHaveLength(1);
  expect(manifestGets.filter((l) => l.status === 200)).toHaveLength(requests);
  expect(requests).toBeGreaterThan(30);
  // 7 s of 3 s tokens renewed after 2 s: the first token and about three refreshes, far fewer than the requests.
  expect(tokens.length).toBeGreaterThanOrEqual(3);
  expect(tokens.length).toBeLessThanOrEqual(6);
  expect(tokens.every((l) => l.status === 200)).toBe(true);
}, 60_000);

test('the server accepts a token it has seen only until the token expires (its answer is remembered no longer)', async () => {
  const q = new URLSearchParams({ service: 'snapyard', scope: 'repository:win98:pull' });
  const t = (await (await fetch(`${s.url}/token?${q}`, { headers: { authorization: `Basic ${Buffer.from('alice:alice-pw').toString('base64')}` } })).json()) as { token: string; expires_in: number };
  expect(t.expires_in).toBe(3);
  const get = () => fetch(`${s.url}/v2/win98/manifests/base`, { headers: { authorization: `Bearer ${t.token}`, accept: OCI_MANIFEST } });
  expect((await get()).status).toBe(200);
  // Past its expiry and the 5 s of clock tolerance: refused, although it was verified (and remembered) 9 s ago.
  await new Promise((r) => setTimeout(r, 9_000));
  const late = await get();
  expect(late.status).toBe(401);
  expect(late.headers.get('www-authenticate')).toContain('invalid_token');
}, 60_000);

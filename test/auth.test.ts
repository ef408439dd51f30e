/**
 * Authentication and scoped access against a real server: htpasswd users
 * made with `snapyard passwd`, an access file, the Docker/OCI token flow,
 * Basic directly, anonymous pull, the catalog and admin API under access
 * control, and the snapyard CLI logging in with --creds, environment
 * variables and a Docker config file.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { EMPTY_CONFIG, OCI_MANIFEST, prng, sha } from './helpers/oci.js';
import { cleanEnv, cliOk, runCli } from './helpers/cli.js';
import { Authenticator } from '../server/auth/authenticator.js';
import { AccessPolicy } from '../server/auth/access.js';
import { Htpasswd } from '../server/auth/htpasswd.js';
import { TokenIssuer } from '../server/auth/tokens.js';

const ACCESS = `
rules:
  - users: [alice]
    repositories: ["*"]
    actions: [pull, push, delete, admin]
  - users: [bob, anonymous]
    repositories: ["win98", "win98/*"]
    actions: [pull]
  - users: [dave]
    repositories: ["team/*"]
    actions: [pull, push]
`;

const PASSWORDS: Record<string, string> = { alice: 'alice-secret', bob: 'bob-secret', carol: 'carol-secret', dave: 'dave: has a colon' };

let dir: string;
let htpasswd: string;
let s: TestServer;
let open: TestServer;

const basic = (u: string, p = PASSWORDS[u]!) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

async function token(scopes: string[], auth?: string): Promise<{ status: number; token?: string; access?: unknown; body: Record<string, unknown> }> {
  const q = new URLSearchParams({ service: 'snapyard' });
  for (const sc of scopes) q.append('scope', sc);
  const r = await fetch(`${s.url}/token?${q}`, { headers: auth ? { authorization: auth } : {} });
  const body = (await r.json()) as Record<string, unknown>;
  const t = body.token as string | undefined;
  const access = t ? (JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()) as { access: unknown }).access : undefined;
  return { status: r.status, ...(t ? { token: t } : {}), access, body };
}

function req(method: string, path: string, auth?: string, body?: Uint8Array | string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${s.url}${path}`, { method, body, headers: { ...headers, ...(auth ? { authorization: auth } : {}) } } as RequestInit);
}

/** Pushes a one-layer manifest as `auth` (blob by POST ?digest=, then the manifest). */
async function pushImage(repo: string, tag: string, auth: string): Promise<{ manifest: string; layer: string; status: number }> {
  const layer = prng(4096, tag.length + repo.length);
  const ld = sha(layer);
  for (const [d, b] of [[ld, layer], [EMPTY_CONFIG.digest, Buffer.from('{}')]] as const) {
    const r = await req('POST', `/v2/${repo}/blobs/uploads/?digest=${d}`, auth, b, { 'content-type': 'application/octet-stream' });
    if (r.status !== 201) return { manifest: '', layer: ld, status: r.status };
  }
  const m = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: EMPTY_CONFIG, layers: [{ mediaType: 'application/octet-stream', digest: ld, size: layer.length }] });
  const r = await req('PUT', `/v2/${repo}/manifests/${tag}`, auth, m, { 'content-type': OCI_MANIFEST });
  return { manifest: sha(m), layer: ld, status: r.status };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'snapyard-auth-'));
  htpasswd = join(dir, 'htpasswd');
  for (const [u, p] of Object.entries(PASSWORDS)) {
    const out = await cliOk(['passwd', htpasswd, u], { input: `${p}\n` });
    expect(out).toContain(`added ${u}`);
  }
  writeFileSync(join(dir, 'access.yaml'), ACCESS);
  const auth = new Authenticator({ htpasswd: new Htpasswd(htpasswd), policy: AccessPolicy.fromFile(join(dir, 'access.yaml')), tokens: new TokenIssuer('snapyard') });
  s = await startTestServer({ auth });
  open = await startTestServer({ auth: new Authenticator({ htpasswd: new Htpasswd(htpasswd), policy: new AccessPolicy() }) });
  expect((await pushImage('win98', 'base', basic('alice'))).status).toBe(201);
  expect((await pushImage('win98/games', 'v1', basic('alice'))).status).toBe(201);
  expect((await pushImage('secret', 'v1', basic('alice'))).status).toBe(201);
}, 120_000);

afterAll(async () => {
  await s?.stop();
  await open?.stop();
});

describe('snapyard passwd and the htpasswd file', () => {
  test('entries are bcrypt in the htpasswd -B format; changing a password replaces the entry', async () => {
    const lines = readFileSync(htpasswd, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(4);
    for (const l of lines) expect(l).toMatch(/^[a-z]+:\$2y\$10\$[./A-Za-z0-9]{53}$/);
    const f = join(dir, 'h2');
    await cliOk(['passwd', f, 'eve'], { input: 'one\n' });
    const out = await cliOk(['passwd', f, 'eve'], { input: 'two\n' });
    expect(out).toContain('changed eve');
    const h = new Htpasswd(f);
    expect(await h.verify('eve', 'two')).toBe(true);
    expect(await h.verify('eve', 'one')).toBe(false);
    const bad = await runCli(['passwd', f, 'bad:name'], { input: 'x\n' });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/^snapyard: INVALID_ARGUMENT/);
  });
});

describe('challenges and the token endpoint', () => {
  test('GET /v2/ without credentials: 401 with a Bearer challenge naming /token and the service', async () => {
    const r = await req('GET', '/v2/');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe(`Bearer realm="${s.url}/token",service="snapyard"`);
    expect(((await r.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('UNAUTHORIZED');
    expect((await req('GET', '/v2/', basic('carol'))).status).toBe(200);
  });

  test('a repository request without credentials names the scope it needs', async () => {
    const r = await req('GET', '/v2/secret/manifests/v1');
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toContain('scope="repository:secret:pull"');
    const p = await req('PUT', '/v2/secret/manifests/v2', undefined, '{}', { 'content-type': OCI_MANIFEST });
    expect(p.status).toBe(401);
    expect(p.headers.get('www-authenticate')).toContain('scope="repository:secret:pull,push"');
  });

  test('a token carries only the granted part of what was asked (scope intersection)', async () => {
    const b = await token(['repository:win98:pull,push,delete', 'repository:secret:pull'], basic('bob'));
    expect(b.status).toBe(200);
    expect(b.access).toEqual([{ type: 'repository', name: 'win98', actions: ['pull'] }]);
    expect(b.body.expires_in).toBe(300);
    expect(b.body.access_token).toBe(b.token);
    const a = await token(['repository:win98:pull,push,delete', 'registry:catalog:*', 'registry:admin:*'], basic('alice'));
    expect(a.access).toEqual([
      { type: 'repository', name: 'win98', actions: ['pull', 'push', 'delete'] },
      { type: 'registry', name: 'catalog', actions: ['*'] },
      { type: 'registry', name: 'admin', actions: ['*'] },
    ]);
    const anon = await token(['repository:win98/games:pull,push', 'repository:secret:pull']);
    expect(anon.access).toEqual([{ type: 'repository', name: 'win98/games', actions: ['pull'] }]);
    expect((await token(['repository:win98:pull'], basic('bob', 'wrong'))).status).toBe(401);
    expect((await token(['repository:win98:pull'], basic('mallory', 'x'))).status).toBe(401);
  });

  test('bearer tokens: pull with a pull token; a push with it gets 401 insufficient_scope; a forged or foreign token 401 invalid_token', async () => {
    const t = (await token(['repository:win98:pull'], basic('bob'))).token!;
    expect((await req('GET', '/v2/win98/manifests/base', `Bearer ${t}`)).status).toBe(200);
    const put = await req('PUT', '/v2/win98/manifests/x', `Bearer ${t}`, '{}', { 'content-type': OCI_MANIFEST });
    expect(put.status).toBe(401);
    expect(put.headers.get('www-authenticate')).toContain('error="insufficient_scope"');
    expect((await req('GET', '/v2/secret/manifests/v1', `Bearer ${t}`)).status).toBe(401);
    const forged = `${t.slice(0, -4)}AAAA`;
    const f = await req('GET', '/v2/win98/manifests/base', `Bearer ${forged}`);
    expect(f.status).toBe(401);
    expect(f.headers.get('www-authenticate')).toContain('error="invalid_token"');
    const other = await new TokenIssuer('snapyard').issue({ user: 'alice', access: [{ type: 'repository', name: 'win98', actions: ['pull', 'push'] }] });
    expect((await req('GET', '/v2/win98/manifests/base', `Bearer ${other.token}`)).status).toBe(401);
  });
});

describe('scoped access', () => {
  test('Basic works directly; a pull-only user gets 403 DENIED for push, delete, tag moves, gc and verify', async () => {
    expect((await req('GET', '/v2/win98/manifests/base', basic('bob'))).status).toBe(200);
    expect((await req('GET', '/v2/win98/games/manifests/v1', basic('bob'))).status).toBe(200);
    expect((await pushImage('win98', 'evil', basic('bob'))).status).toBe(403);
    const m = (await req('GET', '/v2/win98/manifests/base', basic('bob'))).headers.get('docker-content-digest')!;
    expect((await req('DELETE', `/v2/win98/manifests/${m}`, basic('bob'))).status).toBe(403);
    const denied = await req('PUT', '/snapyard/v1/win98/_tags/latest', basic('bob'), JSON.stringify({ target: 'base' }), { 'content-type': 'application/json' });
    expect(denied.status).toBe(403);
    expect(((await denied.json()) as { errors: Array<{ code: string }> }).errors[0]!.code).toBe('DENIED');
    expect((await req('POST', '/snapyard/v1/win98/_tags/base/_rollback', basic('bob'), '{}')).status).toBe(403);
    expect((await req('POST', '/snapyard/v1/_admin/gc', basic('bob'), '{"dryRun":true}')).status).toBe(403);
    expect((await req('POST', '/snapyard/v1/_admin/verify', basic('bob'), '{}')).status).toBe(403);
    expect((await req('POST', '/snapyard/v1/win98/_prune', basic('bob'), '{"keep":0}')).status).toBe(403);
    // Nothing moved.
    expect((await req('GET', '/v2/win98/tags/list', basic('bob'))).status).toBe(200);
    expect(((await (await req('GET', '/v2/win98/tags/list', basic('alice'))).json()) as { tags: string[] }).tags).toEqual(['base']);
    // alice may.
    expect((await req('POST', '/snapyard/v1/_admin/gc', basic('alice'), '{"dryRun":true}')).status).toBe(200);
    expect((await req('PUT', '/snapyard/v1/win98/_tags/latest', basic('alice'), JSON.stringify({ target: 'base' }))).status).toBe(200);
  });

  test('a user with no rule of their own may do what anonymous may, and no more; wrong passwords are 401 everywhere', async () => {
    expect((await req('GET', '/v2/win98/manifests/base', basic('carol'))).status).toBe(200);
    expect((await req('GET', '/v2/secret/manifests/v1', basic('carol'))).status).toBe(403);
    const bad = await req('GET', '/v2/win98/manifests/base', basic('alice', 'nope'));
    expect(bad.status).toBe(401);
    expect(bad.headers.get('www-authenticate')).toMatch(/^Bearer realm=/);
  });

  test('anonymous callers pull what the anonymous rule allows, nothing else; pattern * spans slashes', async () => {
    expect((await req('GET', '/v2/win98/manifests/base')).status).toBe(200);
    expect((await req('GET', '/v2/win98/games/manifests/v1')).status).toBe(200);
    expect((await req('GET', '/v2/secret/manifests/v1')).status).toBe(401);
    expect((await pushImage('team/a/b', 'v1', basic('dave'))).status).toBe(201);
    expect((await pushImage('teamx', 'v1', basic('dave'))).status).toBe(403);
  });

  test('_catalog and the repositories listing show only what the caller may pull', async () => {
    const cat = async (auth?: string) => ((await (await req('GET', '/v2/_catalog', auth)).json()) as { repositories: string[] }).repositories;
    expect(await cat(basic('alice'))).toEqual(['secret', 'team/a/b', 'win98', 'win98/games']);
    expect(await cat(basic('bob'))).toEqual(['win98', 'win98/games']);
    expect(await cat(basic('dave'))).toEqual(['team/a/b', 'win98', 'win98/games']);
    const t = (await token(['registry:catalog:*'])).token!;
    expect(await cat(`Bearer ${t}`)).toEqual(['win98', 'win98/games']);
    const repos = (await (await req('GET', '/snapyard/v1/_admin/repositories', basic('bob'))).json()) as { repositories: Array<{ name: string }> };
    expect(repos.repositories.map((r) => r.name).sort()).toEqual(['win98', 'win98/games']);
  });

  test('without an access file every user may do everything and anonymous callers nothing', async () => {
    const r = await fetch(`${open.url}/v2/anything/manifests/x`);
    expect(r.status).toBe(401);
    const push = await fetch(`${open.url}/v2/any/repo/blobs/uploads/?digest=${sha('x')}`, { method: 'POST', body: 'x', headers: { authorization: basic('carol') } });
    expect(push.status).toBe(201);
    expect((await fetch(`${open.url}/snapyard/v1/_admin/gc`, { method: 'POST', body: '{"dryRun":true}', headers: { authorization: basic('carol') } })).status).toBe(200);
  });
});

describe('--anonymous-pull and an open registry', () => {
  test('--anonymous-pull without an access file: anonymous callers pull every repository and nothing more', async () => {
    const anon = await startTestServer({ auth: new Authenticator({ htpasswd: new Htpasswd(htpasswd), policy: new AccessPolicy({ anonymousPull: true }) }) });
    try {
      const put = await fetch(`${anon.url}/v2/any/thing/blobs/uploads/?digest=${sha('y')}`, { method: 'POST', body: 'y', headers: { authorization: basic('carol') } });
      expect(put.status).toBe(201);
      expect((await fetch(`${anon.url}/v2/any/thing/blobs/${sha('y')}`)).status).toBe(200);
      const push = await fetch(`${anon.url}/v2/any/thing/blobs/uploads/?digest=${sha('z')}`, { method: 'POST', body: 'z' });
      expect(push.status).toBe(401);
      expect((await fetch(`${anon.url}/v2/any/thing/blobs/${sha('y')}`, { method: 'DELETE' })).status).toBe(401);
    } finally {
      await anon.stop();
    }
  });

  test('serve without --htpasswd on a non-loopback address says loudly that it is open', async () => {
    const { spawn } = await import('node:child_process');
    const { BIN } = await import('./helpers/cli.js');
    const child = spawn(process.execPath, [BIN, 'serve', '--data', join(dir, 'open-data'), '--host', '0.0.0.0', '--port', '0'], { env: cleanEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    await new Promise<void>((resolve) => {
      child.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        if (err.includes('WARNING')) resolve();
      });
      setTimeout(resolve, 10_000);
    });
    child.kill('SIGTERM');
    expect(err).toMatch(/WARNING: no --htpasswd: anyone who can reach 0\.0\.0\.0:\d+ may push, delete/);
  });
});

describe('the snapyard CLI logs in', () => {
  let file: string;
  let env: NodeJS.ProcessEnv;
  beforeAll(() => {
    file = join(dir, 'disk.img');
    writeFileSync(file, prng(3 * 1024 * 1024, 5));
    env = cleanEnv({ HOME: dir });
  });

  test('--creds: push and pull through the token flow, byte-exact', async () => {
    await cliOk(['push', 'win98/cli:v1', file, '--registry', s.url, '--cache', join(dir, 'c1'), '--creds', 'alice:alice-secret'], { env });
    const out = join(dir, 'pulled.img');
    await cliOk(['pull', 'win98/cli:v1', '-o', out, '--registry', s.url, '--cache', join(dir, 'c2'), '--creds', 'bob:bob-secret'], { env });
    expect(readFileSync(out).equals(readFileSync(file))).toBe(true);
  });

  test('SNAPYARD_USERNAME / SNAPYARD_PASSWORD, and a Docker config file (REGISTRY_AUTH_FILE) keyed by host:port', async () => {
    await cliOk(['ls', 'win98', '--registry', s.url], { env: { ...env, SNAPYARD_USERNAME: 'bob', SNAPYARD_PASSWORD: 'bob-secret' } });
    const cfg = join(dir, 'auth.json');
    writeFileSync(cfg, JSON.stringify({ auths: { [s.host]: { auth: Buffer.from('alice:alice-secret').toString('base64') } } }));
    const out = await cliOk(['gc', '--dry-run', '--registry', s.url, '--json'], { env: { ...env, REGISTRY_AUTH_FILE: cfg } });
    expect(JSON.parse(out).dryRun).toBe(true);
    // A Kubernetes secret mounted as a directory holding .dockerconfigjson.
    const mounted = join(dir, 'secret');
    await import('node:fs').then((fs) => fs.mkdirSync(mounted));
    writeFileSync(join(mounted, '.dockerconfigjson'), JSON.stringify({ auths: { [`http://${s.host}`]: { username: 'bob', password: 'bob-secret' } } }));
    await cliOk(['ls', 'win98', '--registry', s.url], { env: { ...env, DOCKER_CONFIG: mounted } });
  });

  test('refusals are one snapyard: line and a non-zero exit: no credentials, wrong password, pull-only push, corrupt auth file', async () => {
    const none = await runCli(['ls', 'secret', '--registry', s.url], { env });
    expect(none.code).not.toBe(0);
    expect(none.stderr.trim().split('\n')).toHaveLength(1);
    expect(none.stderr).toMatch(/^snapyard: .*(UNAUTHORIZED|401)/);
    // win98 is open to anonymous pulls, so no login happens there: ask for something that needs one.
    const wrong = await runCli(['ls', 'secret', '--registry', s.url, '--creds', 'bob:nope'], { env });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/^snapyard: UNAUTHORIZED: the registry refused the credentials of bob/);
    const push = await runCli(['push', 'win98/cli:v2', file, '--registry', s.url, '--cache', join(dir, 'c3'), '--creds', 'bob:bob-secret'], { env });
    expect(push.code).not.toBe(0);
    expect(push.stderr.trim().split('\n')).toHaveLength(1);
    expect(push.stderr).toMatch(/^snapyard: /);
    const cfg = join(dir, 'corrupt.json');
    writeFileSync(cfg, '{"auths": {');
    const corrupt = await runCli(['ls', '--registry', s.url], { env: { ...env, REGISTRY_AUTH_FILE: cfg } });
    expect(corrupt.code).toBe(2);
    expect(corrupt.stderr).toMatch(/^snapyard: INVALID_ARGUMENT: registry auth file .*corrupt\.json is not valid JSON/);
  });
});

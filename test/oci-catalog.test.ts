/**
 * GET /v2/_catalog through HTTP: sorted `{"repositories":[...]}`, `n` /
 * `last` pagination with an RFC 5988 Link header, bad `n` refused, and
 * with auth on only the repositories the caller may pull (pages counted
 * over those alone).
 */
import { describe, expect, test, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, type TestServer } from './helpers/server.js';
import { errorCode, Oci, sha } from './helpers/oci.js';
import { Authenticator } from '../server/auth/authenticator.js';
import { AccessPolicy } from '../server/auth/access.js';
import { Htpasswd, setPassword } from '../server/auth/htpasswd.js';

// Pushed in this (unsorted) order.
const REPOS = ['zeta', 'alpha/one', 'team/b', 'alpha', 'team/a', 'mid-dle', 'alpha/two'];
const SORTED = [...REPOS].sort();

interface Page { repositories: string[]; link: string | null; status: number }

async function page(base: string, query: string, headers: Record<string, string> = {}): Promise<Page> {
  const r = await fetch(`${base}/v2/_catalog${query}`, { headers });
  const link = r.headers.get('link');
  const body = r.status === 200 ? ((await r.json()) as { repositories: string[] }) : { repositories: [] };
  return { repositories: body.repositories, link, status: r.status };
}

/** Follows Link headers from `first`; returns every page's names. */
async function walk(base: string, first: string, headers: Record<string, string> = {}): Promise<string[][]> {
  const pages: string[][] = [];
  let next: string | null = first;
  while (next !== null) {
    const p = await page(base, next, headers);
    expect(p.status).toBe(200);
    pages.push(p.repositories);
    if (p.link === null) break;
    const m = /^<\/v2\/_catalog(\?[^>]*)>; rel="next"$/.exec(p.link);
    expect(m, `Link header ${p.link}`).not.toBeNull();
    next = m![1]!;
    expect(pages.length).toBeLessThan(20);
  }
  return pages;
}

describe('GET /v2/_catalog (open registry)', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startTestServer();
    const oci = new Oci(s.url);
    for (const r of REPOS) await oci.pushBlob(r, `blob of ${r}`);
  });
  afterAll(async () => {
    await s.stop();
  });

  test('lists every repository, sorted, without a Link when it all fits', async () => {
    const p = await page(s.url, '');
    expect(p.status).toBe(200);
    expect(p.repositories).toEqual(SORTED);
    expect(p.link).toBeNull();
  });

  test('n=2 pages through everything following the Link header, each name once', async () => {
    const pages = await walk(s.url, '?n=2');
    expect(pages.map((p) => p.length)).toEqual([2, 2, 2, 1]);
    expect(pages.flat()).toEqual(SORTED);
  });

  test('last is exclusive; a page that ends exactly at the end has no Link', async () => {
    const p = await page(s.url, `?n=3&last=${encodeURIComponent('alpha/two')}`);
    expect(p.repositories).toEqual(SORTED.slice(3, 6));
    expect(p.link).toBe(`</v2/_catalog?n=3&last=${encodeURIComponent(SORTED[5]!)}>; rel="next"`);
    const tail = await page(s.url, `?n=1&last=${encodeURIComponent(SORTED[5]!)}`);
    expect(tail.repositories).toEqual([SORTED[6]]);
    expect(tail.link).toBeNull();
    // A last that is not a repository still works (lexical position).
    expect((await page(s.url, '?last=b')).repositories).toEqual(SORTED.filter((r) => r > 'b'));
    expect((await page(s.url, '?last=zzz')).repositories).toEqual([]);
  });

  test('n=0 gives an empty page; a huge n is capped, not trusted', async () => {
    expect(await page(s.url, '?n=0')).toEqual({ repositories: [], link: null, status: 200 });
    expect((await page(s.url, '?n=999999999')).repositories).toEqual(SORTED);
  });

  test('a bad n is a 400 in the OCI error format', async () => {
    for (const n of ['-1', 'abc', '1e3', '99999999999999999999', ' 2']) {
      const r = await fetch(`${s.url}/v2/_catalog?n=${encodeURIComponent(n)}`);
      expect(r.status, `n=${n}`).toBe(400);
      expect(await errorCode(r)).toBe('UNSUPPORTED');
    }
  });
});

describe('GET /v2/_catalog with auth: only what the caller may pull', () => {
  let dir: string;
  let server: TestServer;
  const basic = (u: string) => ({ Authorization: `Basic ${Buffer.from(`${u}:pw-${u}`).toString('base64')}` });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'snapyard-catalog-'));
    const htpasswd = join(dir, 'htpasswd');
    for (const u of ['alice', 'bob']) setPassword(htpasswd, u, `pw-${u}`, 4);
    const policy = new AccessPolicy({
      rules: [
        { users: ['alice'], repositories: ['*'], actions: ['pull', 'push', 'delete', 'admin'] },
        { users: ['bob'], repositories: ['team/*', 'zeta'], actions: ['pull'] },
      ],
    });
    server = await startTestServer({ auth: new Authenticator({ htpasswd: new Htpasswd(htpasswd), policy }) });
    for (const r of REPOS) {
      const body = `blob of ${r}`;
      const res = await fetch(`${server.url}/v2/${r}/blobs/uploads/?digest=${sha(body)}`, { method: 'POST', body, headers: basic('alice') });
      expect(res.status).toBe(201);
    }
  });
  afterAll(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('alice sees everything; bob sees only team/* and zeta, and his pages count only those', async () => {
    expect((await page(server.url, '', basic('alice'))).repositories).toEqual(SORTED);
    const bob = SORTED.filter((r) => r.startsWith('team/') || r === 'zeta');
    expect((await page(server.url, '', basic('bob'))).repositories).toEqual(bob);
    const pages = await walk(server.url, '?n=1', basic('bob'));
    expect(pages).toEqual(bob.map((r) => [r]));
  });

  test('an anonymous caller is challenged', async () => {
    const r = await fetch(`${server.url}/v2/_catalog`);
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/^(Bearer|Basic) /);
  });
});

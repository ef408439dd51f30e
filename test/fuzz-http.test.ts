/**
 * Path tricks in repository names and Range header abuse against a real
 * server (issue 8), sent as raw HTTP (node:http sends the path as written:
 * no client-side normalization of `..`, `%2e%2e` or `//`).
 *
 * Names: every trick answers a 4xx in the OCI error format (never 5xx),
 * creates no repository with an invalid name, and never reaches another
 * repository's data (a GET through a trick path never returns the secret
 * blob pushed to a neighbouring repository unless the path, once
 * normalized, names that repository itself).
 * Ranges: fuzzed and hand-picked Range headers give 206 with the exact
 * slice, 200 with the whole blob (ignored header), or 416 with
 * `Content-Range: bytes * /size`; nothing else.
 */
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { request } from 'node:http';
import { useRegistry, type TestServer } from './helpers/server.js';
import { prng, sha, type Oci } from './helpers/oci.js';
import { isRepoName } from '../storage/protocol/ref-grammar.js';

let s: TestServer;
let oci: Oci;
useRegistry((r) => {
  s = r.s;
  oci = r.oci;
});

interface Raw { status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }

function raw(method: string, path: string, headers: Record<string, string> = {}, body?: Buffer): Promise<Raw> {
  const u = new URL(s.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method, path, headers: { ...headers, ...(body ? { 'Content-Length': String(body.byteLength) } : {}) }, timeout: 5_000 }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (b: Buffer) => parts.push(b));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer in 5 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

const TRICKS = [
  '..', '../secret', 'a/../secret', '%2e%2e', '%2e%2e/secret', 'a/%2e%2e/secret', '.%2e/secret', 'a//secret', '/secret', 'secret/', 'a%2fsecret', 'a%2Fsecret',
  'a%252fsecret', 'a/./secret', './secret', 'SECRET', 'Secret/x', 'caf%C3%A9', '%F0%9F%A6%80', 'a%00b', 'a%0d%0ab', 'a'.repeat(256), `${'a/'.repeat(200)}b`,
  'a\\secret', 'a;secret', 'a?secret', '-secret', 'secret-', 'a__b', 'a...b', '%', '%zz', 'a%20b', '~', '_catalog', '%2e', 'a/%2e/secret',
];

describe('path tricks in names', () => {
  test('answer 4xx OCI errors (or act on the repository the normalized path names), never 5xx, never invalid repositories', async () => {
    const secret = prng(3000, 77);
    const secretDigest = await oci.pushBlob('secret', secret);
    const before = new Set(await s.store.meta.listRepos());
    let answered = 0;
    for (const name of TRICKS) {
      const endpoints: Array<[string, string, Buffer?]> = [
        ['GET', `/v2/${name}/blobs/${secretDigest}`],
        ['HEAD', `/v2/${name}/manifests/latest`],
        ['GET', `/v2/${name}/tags/list`],
        ['POST', `/v2/${name}/blobs/uploads/?digest=${sha('x')}`, Buffer.from('x')],
        ['PUT', `/v2/${name}/manifests/t`, Buffer.from('{}')],
        ['DELETE', `/v2/${name}/blobs/${secretDigest}`],
        ['GET', `/v2/${name}/referrers/${secretDigest}`],
      ];
      for (const [method, path, body] of endpoints) {
        const r = await raw(method, path, body ? { 'Content-Type': 'application/octet-stream' } : {}, body);
        answered++;
        expect(r.status, `${method} ${path}`).toBeLessThan(500);
        if (r.status >= 400 && method !== 'HEAD') {
          let err: { errors: Array<{ code: string }> };
          try {
            err = JSON.parse(r.body.toString()) as typeof err;
          } catch {
            throw new Error(`${method} ${path}: ${r.status} with a body that is not an OCI error: ${JSON.stringify(r.body.toString().slice(0, 200))} ${JSON.stringify(r.headers)}`);
          }
          expect(err.errors[0]!.code, `${method} ${path}`).toMatch(/^[A-Z_]+$/);
        }
        if (method === 'GET' && path.includes('/blobs/') && r.status === 200) {
          // Only a path that normalizes to /v2/secret/... may read the secret blob.
          expect(new URL(path, 'http://x').pathname, `${path} read the secret blob`).toBe(`/v2/secret/blobs/${secretDigest}`);
        }
        if (method === 'DELETE' && r.status === 202) {
          expect(new URL(path, 'http://x').pathname).toBe(`/v2/secret/blobs/${secretDigest}`);
          await oci.pushBlob('secret', secret);
        }
      }
    }
    const after = await s.store.meta.listRepos();
    for (const repo of after) expect(isRepoName(repo), repo).toBe(true);
    const added = after.filter((r) => !before.has(r));
    // Only names the grammar accepts were created (e.g. "a/secret" is not created by "a%2fsecret").
    for (const r of added) expect(TRICKS.some((t) => new URL(`/v2/${t}/x`, 'http://x').pathname === `/v2/${r}/x`), r).toBe(true);
    expect(answered).toBe(TRICKS.length * 7);
    console.log(`fuzz-http names: ${answered} requests over ${TRICKS.length} tricks`);
    // The secret is still there, byte-exact.
    const back = await raw('GET', `/v2/secret/blobs/${secretDigest}`);
    expect(back.status).toBe(200);
    expect(back.body.equals(secret)).toBe(true);
  });
});

describe('Range header abuse', () => {
  const SIZE = 200_001;
  const blob = prng(SIZE, 5);
  let digest: string;

  /** Checks one answer against what RFC 9110 allows for `header`. */
  function checkAnswer(header: string, r: Raw): 'partial' | 'whole' | 'unsatisfiable' {
    if (r.status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(r.headers['content-range']));
      expect(m, `${header}: Content-Range ${String(r.headers['content-range'])}`).not.toBeNull();
      const [a, b, total] = [Number(m![1]), Number(m![2]), Number(m![3])];
      expect(total).toBe(SIZE);
      expect(r.body.equals(blob.subarray(a, b + 1)), header).toBe(true);
      return 'partial';
    }
    if (r.status === 200) {
      expect(r.body.equals(blob), header).toBe(true);
      return 'whole';
    }
    expect(r.status, `${header}: ${r.status} ${r.body.toString().slice(0, 200)}`).toBe(416);
    expect(r.headers['content-range']).toBe(`bytes */${SIZE}`);
    return 'unsatisfiable';
  }

  test('hand-picked abuse: multi-range, huge, negative, -0, overflow, junk', async () => {
    digest = await oci.pushBlob('ranges', blob);
    const cases: Array<[string, 'partial' | 'whole' | 'unsatisfiable']> = [
      ['bytes=0-0', 'partial'],
      [`bytes=${SIZE - 1}-`, 'partial'],
      ['bytes=-1', 'partial'],
      ['bytes=0-99999999999999999999999999', 'partial'],
      ['bytes=-99999999999999999999999999', 'partial'],
      [`bytes=-${'9'.repeat(5000)}`, 'partial'],
      ['BYTES=5-9', 'partial'],
      ['bytes=-0', 'unsatisfiable'],
      [`bytes=${SIZE}-`, 'unsatisfiable'],
      ['bytes=99999999999999999999999999-', 'unsatisfiable'],
      [`bytes=${2 ** 53}-${2 ** 53 + 10}`, 'unsatisfiable'],
      ['bytes=10-5', 'unsatisfiable'],
      ['bytes=0-1,5-9', 'whole'],
      ['bytes=0-1, 0-1', 'whole'],
      ['bytes=--5', 'whole'],
      ['bytes=-5-10', 'whole'],
      ['bytes=1.5-3', 'whole'],
      ['bytes=0x10-0x20', 'whole'],
      ['bytes=-', 'whole'],
      ['bytes=', 'whole'],
      ['items=0-5', 'whole'],
      ['bytes=٣-٥', 'whole'],
      ['bytes=0-1\u0000', 'whole'],
    ];
    for (const [header, want] of cases) {
      let r: Raw;
      try {
        r = await raw('GET', `/v2/ranges/blobs/${digest}`, { Range: header });
      } catch (e) {
        // node:http refuses to send some header values (NUL): nothing reached the server.
        expect((e as { code?: string }).code, header).toBe('ERR_INVALID_CHAR');
        continue;
      }
      expect(checkAnswer(header, r), header).toBe(want);
    }
  });

  test('fuzzed Range headers: only 206 exact, 200 whole or 416', async () => {
    const num = fc.oneof(fc.nat({ max: SIZE * 2 }), fc.bigInt({ min: 0n, max: 10n ** 30n }).map(String), fc.constantFrom('', '-1', '0', String(SIZE), String(SIZE - 1), String(2 ** 53), '1e3', ' 1'));
    const spec = fc.tuple(num, num).map(([a, b]) => `${a}-${b}`);
    const header = fc.oneof(
      spec.map((r) => `bytes=${r}`),
      fc.array(spec, { minLength: 2, maxLength: 5 }).map((rs) => `bytes=${rs.join(',')}`),
      fc.string({ maxLength: 30 }).map((x) => `bytes=${x}`),
      fc.string({ maxLength: 30 }),
    );
    let n = 0;
    const seen = { partial: 0, whole: 0, unsatisfiable: 0 };
    await fc.assert(
      fc.asyncProperty(header, async (h) => {
        let r: Raw;
        try {
          r = await raw('GET', `/v2/ranges/blobs/${digest}`, { Range: h });
        } catch (e) {
          if ((e as { code?: string }).code === 'ERR_INVALID_CHAR') return; // not sendable as a header
          throw e;
        }
        n++;
        seen[checkAnswer(h, r)]++;
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 600), seed: Number(process.env.FUZZ_SEED ?? 9) },
    );
    console.log(`fuzz-http ranges: ${n} requests: ${seen.partial} partial, ${seen.whole} whole, ${seen.unsatisfiable} unsatisfiable`);
    expect(seen.partial).toBeGreaterThan(0);
    expect(seen.unsatisfiable).toBeGreaterThan(0);
  });
});

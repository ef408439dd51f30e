/**
 * Sessions across replicas (issue 11): two `snapyard serve` processes over
 * one S3 (Ceph RGW) bucket prefix and one PostgreSQL schema, each told where
 * the other reaches it (--advertise-url). Requests of one session go to
 * either replica, as a load balancer would send them:
 *   - an OCI chunked upload opened on A, continued and finished on B (B
 *     relays to A, which holds the session's chunker);
 *   - a delta push session opened on A, uploaded to on B, committed on A;
 *   - gc --grace 0s on B while a push session on A relies on chunks nothing
 *     references yet: they are kept and the commit succeeds;
 *   - a session whose replica died answers 404 BLOB_UPLOAD_UNKNOWN elsewhere.
 */
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sha256 } from '../storage/digest.js';
import { freshPostgresUrl } from './helpers/metadata-stores.js';
import { compactBody, repeatingIndex, uploadBody } from './helpers/push-wire.js';
import { emptyS3Prefix } from './helpers/s3-prefix.js';
import { freePort, spawnServe, type ServeProcess } from './helpers/serve-process.js';
import { testS3, type TestS3 } from './helpers/services.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-replica-sessions-');
let s3: TestS3;
let storeUrl: string;
let a: ServeProcess;
let b: ServeProcess;
const extra: ServeProcess[] = [];

async function replica(name: string): Promise<ServeProcess> {
  const port = await freePort();
  const args = ['--data', join(tmp(), name), '--workers', '1', '--store', storeUrl, '--metadata', pgUrl, '--advertise-url', `http://127.0.0.1:${port}`];
  return spawnServe(args, { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey }, port);
}
let pgUrl: string;

async function call(base: string, method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}) {
  const r = await fetch(base + path, { method, headers, ...(body !== undefined ? { body } : {}) });
  const buf = Buffer.from(await r.arrayBuffer());
  let json: any = null;
  try {
    json = JSON.parse(buf.toString());
  } catch {
    json = null;
  }
  return { status: r.status, headers: r.headers, buf, json };
}

beforeAll(async () => {
  s3 = await testS3();
  storeUrl = s3.withPrefix(`replica-sessions-${process.pid}-${randomBytes(4).toString('hex')}`);
  pgUrl = await freshPostgresUrl();
  a = await replica('data-a');
  b = await replica('data-b');
}, 120_000);

afterAll(async () => {
  for (const s of [a, b, ...extra]) await s?.stop();
  if (s3) await emptyS3Prefix(s3, storeUrl);
});

describe('sessions continue on another replica', () => {
  test('an OCI chunked upload opened on A is continued, checked and finished through B', async () => {
    const blob = randomBytes(3 * 1024 * 1024 + 123);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const start = await call(a.url, 'POST', '/v2/sess/oci/blobs/uploads/');
    expect(start.status).toBe(202);
    const loc = start.headers.get('location')!;
    const cut = 1024 * 1024;
    const p1 = await call(b.url, 'PATCH', loc, blob.subarray(0, cut), { 'Content-Range': `0-${cut - 1}`, 'Content-Type': 'application/octet-stream' });
    expect(p1.status, p1.buf.toString()).toBe(202);
    expect(p1.headers.get('range')).toBe(`0-${cut - 1}`);
    const st = await call(b.url, 'GET', loc);
    expect(st.status).toBe(204);
    expect(st.headers.get('range')).toBe(`0-${cut - 1}`);
    // Out of order through B: A's answer (416) comes back as it is.
    const bad = await call(b.url, 'PATCH', loc, blob.subarray(0, 10), { 'Content-Range': '5-14' });
    expect(bad.status).toBe(416);
    const p2 = await call(a.url, 'PATCH', loc, blob.subarray(cut, 2 * cut), { 'Content-Range': `${cut}-${2 * cut - 1}` });
    expect(p2.status).toBe(202);
    const put = await call(b.url, 'PUT', `${loc}?digest=${digest}`, blob.subarray(2 * cut));
    expect(put.status, put.buf.toString()).toBe(201);
    expect(put.headers.get('docker-content-digest')).toBe(digest);
    for (const r of [a, b]) {
      const got = await call(r.url, 'GET', `/v2/sess/oci/blobs/${digest}`);
      expect(got.status).toBe(200);
      expect(got.buf.equals(blob)).toBe(true);
    }
    // Finished: the session is gone on both.
    expect((await call(b.url, 'GET', loc)).status).toBe(404);
    expect((await call(a.url, 'GET', loc)).status).toBe(404);
  });

  test('a wrong digest finished through B commits nothing; the session ends', async () => {
    const blob = randomBytes(200_000);
    const start = await call(a.url, 'POST', '/v2/sess/wrong/blobs/uploads/');
    const loc = start.headers.get('location')!;
    const wrong = sha256(Buffer.from('something else'));
    const put = await call(b.url, 'PUT', `${loc}?digest=${wrong}`, blob);
    expect(put.status).toBe(400);
    expect(put.json.errors[0].code).toBe('DIGEST_INVALID');
    expect((await call(a.url, 'HEAD', `/v2/sess/wrong/blobs/${wrong}`)).status).toBe(404);
    expect((await call(b.url, 'GET', loc)).status).toBe(404);
  });

  test('a delta push session opened on A takes chunks on B and commits on A', async () => {
    const chunks = [randomBytes(40_000), randomBytes(50_000), randomBytes(30_000)];
    const whole = Buffer.concat(chunks);
    const index = repeatingIndex(chunks, [1, 1, 1], sha256(whole));
    const miss = await call(a.url, 'POST', '/snapyard/v1/sess/push/_missing', compactBody(index));
    expect(miss.status, miss.buf.toString()).toBe(200);
    expect(miss.json.missing).toEqual([0, 1, 2]);
    const up = await call(b.url, 'POST', `/snapyard/v1/sess/push/_upload?session=${miss.json.session}`, uploadBody(chunks));
    expect(up.status, up.buf.toString()).toBe(200);
    const commit = await call(a.url, 'POST', '/snapyard/v1/sess/push/_commit', JSON.stringify({ session: miss.json.session, digest: index.blobDigest }));
    expect(commit.status, commit.buf.toString()).toBe(201);
    const got = await call(b.url, 'GET', `/v2/sess/push/blobs/${index.blobDigest}`);
    expect(got.buf.equals(whole)).toBe(true);
    // Committed on A: the session is closed for B too.
    const again = await call(b.url, 'POST', `/snapyard/v1/sess/push/_upload?session=${miss.json.session}`, uploadBody(chunks));
    expect(again.status).toBe(404);
  });
});

describe('gc on one replica, sessions on another', () => {
  test('gc --grace 0s on B keeps the chunks a push session open on A relies on; its commit on B succeeds', async () => {
    const chunks = [randomBytes(64_000), randomBytes(64_000)];
    const whole = Buffer.concat(chunks);
    const index = repeatingIndex(chunks, [1, 1], sha256(whole));
    const miss = await call(a.url, 'POST', '/snapyard/v1/sess/gc/_missing', compactBody(index));
    expect(miss.json.missing).toEqual([0, 1]);
    expect((await call(a.url, 'POST', `/snapyard/v1/sess/gc/_upload?session=${miss.json.session}`, uploadBody(chunks))).status).toBe(200);
    // Nothing references the two chunks; A's pins are A's only. B's gc must still keep them.
    const gc = await call(b.url, 'POST', '/snapyard/v1/_admin/gc', JSON.stringify({ graceSeconds: 0 }), { 'Content-Type': 'application/json' });
    expect(gc.status, gc.buf.toString()).toBe(200);
    const commit = await call(b.url, 'POST', '/snapyard/v1/sess/gc/_commit', JSON.stringify({ session: miss.json.session, digest: index.blobDigest }));
    expect(commit.status, commit.buf.toString()).toBe(201);
    expect((await call(a.url, 'GET', `/v2/sess/gc/blobs/${index.blobDigest}`)).buf.equals(whole)).toBe(true);
  });
});

describe('a replica that dies', () => {
  test('its OCI upload session answers 404 BLOB_UPLOAD_UNKNOWN on the other; a new one works', async () => {
    const c = await replica('data-c');
    extra.push(c);
    const start = await call(c.url, 'POST', '/v2/sess/dead/blobs/uploads/');
    const loc = start.headers.get('location')!;
    expect((await call(b.url, 'PATCH', loc, randomBytes(1000), { 'Content-Range': '0-999' })).status).toBe(202);
    c.child.kill('SIGKILL');
    await c.stop();
    const after = await call(b.url, 'PATCH', loc, randomBytes(1000), { 'Content-Range': '1000-1999' });
    expect(after.status).toBe(404);
    expect(after.json.errors[0].code).toBe('BLOB_UPLOAD_UNKNOWN');
    const blob = randomBytes(5000);
    const digest = `sha256:${createHash('sha256').update(blob).digest('hex')}`;
    const again = await call(b.url, 'POST', `/v2/sess/dead/blobs/uploads/?digest=${digest}`, blob);
    expect(again.status).toBe(201);
  });
});

/**
 * `snapyard serve --store s3://... --metadata postgres://...` end to end
 * (issue 11): the CLI (bin/snapyard.js, compiled dist/) starts the registry
 * with its chunk packs under a fresh prefix of the run's S3 (Ceph RGW) bucket
 * and its metadata and chunk catalog in a fresh schema of the run's
 * PostgreSQL (test/helpers/services.ts). Real qcow2 images are pushed, pulled
 * byte-exact (full and as an overlay), a variant removed and collected, verify
 * passes, and a second server (another data directory) on the same bucket
 * prefix and schema serves the base: a replica.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { S3PackDriver } from '../storage/chunks/s3-pack-driver.js';
import { emptyS3Prefix } from './helpers/s3-prefix.js';
import { cliOk, runCli } from './helpers/cli.js';
import { bucketBytes } from './helpers/remote-stores.js';
import { spawnServe, type ServeProcess } from './helpers/serve-process.js';
import { freshPostgresUrl } from './helpers/metadata-stores.js';
import { guestContentEqual, makeBaseImage, makeVariant, runTool } from './helpers/qcow2-fixtures.js';
import { testS3, type TestS3 } from './helpers/services.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-serve-s3-');

/** `snapyard serve --store S3 --metadata PG` (the store through SNAPYARD_STORE when `viaEnv`). */
function serve(data: string, store: string, metadata: string, viaEnv = false): Promise<ServeProcess> {
  const args = ['--data', data, '--workers', '1', '--metadata', metadata, ...(viaEnv ? [] : ['--store', store])];
  return spawnServe(args, { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, ...(viaEnv ? { SNAPYARD_STORE: store } : {}) });
}

/** A client cache of its own for each pull: every byte comes from the server. */
const freshCache = () => join(tmp(), 'cache');
const sha256File = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

let dir: string;
let s3: TestS3;
let storeUrl: string;
let pgUrl: string;
const servers: ServeProcess[] = [];
const img = { base: '', v2: '' };

async function bucket(): Promise<{ packs: number; bytes: number }> {
  const d = new S3PackDriver({ location: storeUrl, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  try {
    return await bucketBytes(d);
  } finally {
    await d.close();
  }
}

beforeAll(async () => {
  dir = tmp();
  s3 = await testS3();
  storeUrl = s3.withPrefix(`serve-${process.pid}-${randomBytes(4).toString('hex')}`);
  pgUrl = await freshPostgresUrl();
  img.base = await makeBaseImage(dir, { scale: 0.25, sizeMiB: 32 });
  img.v2 = await makeVariant(dir, img.base, 'v2');
});

afterAll(async () => {
  for (const s of servers) await s.stop();
  // Leave nothing in the bucket (RGW's memstore keeps objects in RAM).
  if (storeUrl) await emptyS3Prefix(s3, storeUrl);
});

describe('snapyard serve --store s3:// --metadata postgres://', () => {
  test('push, pull byte-exact (full and overlay), rm + gc + verify, and a replica on the same bucket and database pulls the base', async () => {
    const a = await serve(join(dir, 'data-a'), storeUrl, pgUrl);
    servers.push(a);
    const cli = (args: string[], url = a.url) => cliOk([...args, '--registry', url]);
    const cliJson = async <T>(args: string[], url = a.url): Promise<T> => JSON.parse((await cli([...args, '--json'], url)).trim()) as T;
    expect(a.startLine().chunks).toContain(storeUrl.replace(/\?.*$/, ''));

    const push = async (ref: string, file: string) => (await cliJson<{ manifestDigest: string }>(['push', ref, file, '--cache', join(dir, 'push-cache')])).manifestDigest;
    await push('s3/img:base', img.base);
    const d2 = await push('s3/img:v2', img.v2);
    const afterPush = await bucket();
    expect(afterPush.packs).toBeGreaterThan(0);
    // The packs are in the bucket, not in the data directory.
    expect(existsSync(join(dir, 'data-a', 'store'))).toBe(false);
    expect(readdirSync(join(dir, 'data-a', 'remote', 'spool'))).toEqual([]);

    for (const [tag, file] of [['base', img.base], ['v2', img.v2]] as const) {
      const out = join(dir, `pulled-${tag}.qcow2`);
      await cli(['pull', `s3/img:${tag}`, '-o', out, '--cache', freshCache()]);
      expect(sha256File(out), tag).toBe(sha256File(file));
    }
    const overlay = join(dir, 'v2-overlay.qcow2');
    await cli(['pull', 's3/img:v2', '-o', overlay, '--base', img.base, '--overlay', '--cache', freshCache()]);
    expect((await runTool('qemu-img', ['check', overlay])).stdout).toContain('No errors were found');
    expect(await guestContentEqual(overlay, img.v2)).toBe(true);

    // The chunk catalog is in PostgreSQL, beside the metadata.
    const c = new pg.Client(pgUrl);
    await c.connect();
    let rowsBefore: number;
    try {
      rowsBefore = (await c.query('SELECT COUNT(*)::int AS n FROM snapyard_chunks')).rows[0].n as number;
      expect(rowsBefore).toBeGreaterThan(0);
    } finally {
      await c.end();
    }

    // rm the variant, gc, verify: the base still pulls.
    await cli(['rm', `s3/img@${d2}`]);
    const gc = await cliJson<{ chunks: number; storedBytes: number; packsRewritten: number; packsDeleted: number; packBytesFreed: number }>(['gc', '--grace', '0s']);
    expect(gc.chunks, JSON.stringify(gc)).toBeGreaterThan(0);
    const afterGc = await bucket();
    expect(afterGc.bytes).toBeLessThan(afterPush.bytes);
    expect(gc.packBytesFreed).toBe(afterPush.bytes - afterGc.bytes);
    // Space came back: the bucket holds <= 1.1x the live records.
    const c2 = new pg.Client(pgUrl);
    await c2.connect();
    try {
      const live = (await c2.query('SELECT COUNT(*)::int AS n, SUM(length + 40)::bigint AS bytes FROM snapyard_chunks')).rows[0] as { n: number; bytes: string };
      expect(live.n).toBe(rowsBefore - gc.chunks);
      expect(afterGc.bytes).toBeLessThanOrEqual(1.1 * Number(live.bytes));
    } finally {
      await c2.end();
    }
    const verify = await runCli(['verify', '--registry', a.url, '--json']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    const out = join(dir, 'base-after-gc.qcow2');
    await cli(['pull', 's3/img:base', '-o', out, '--cache', freshCache()]);
    expect(sha256File(out)).toBe(sha256File(img.base));
    const gone = await runCli(['pull', 's3/img:v2', '-o', join(dir, 'gone.qcow2'), '--cache', freshCache(), '--registry', a.url]);
    expect(gone.code).not.toBe(0);

    // A replica: another process, another data directory, the same bucket prefix and schema (the store through SNAPYARD_STORE).
    const b = await serve(join(dir, 'data-b'), storeUrl, pgUrl, true);
    servers.push(b);
    const out2 = join(dir, 'base-from-replica.qcow2');
    await cli(['pull', 's3/img:base', '-o', out2, '--cache', freshCache()], b.url);
    expect(sha256File(out2)).toBe(sha256File(img.base));

    // Each replica logs its S3 requests when it stops: the writer put its packs whole (one PUT each), the replica only read.
    type Stats = { puts: number; gets: number; bytesPut: number; bytesGot: number };
    const requests = async (s: ServeProcess) => {
      expect(await s.stop()).toBe(0);
      const line = s.log().split('\n').find((l) => l.includes('"stopped"'));
      return (JSON.parse(line!) as { packRequests: Stats }).packRequests;
    };
    const ra = await requests(a);
    const rb = await requests(b);
    expect(ra.puts).toBe(afterPush.packs);
    expect(ra.bytesPut).toBe(afterPush.bytes);
    expect(rb.puts).toBe(0);
    expect(rb.gets).toBeGreaterThan(0);
    expect(rb.bytesGot).toBeGreaterThanOrEqual(0.9 * afterGc.bytes); // the base's chunks, read from the bucket
  });

  test('--store s3:// without --metadata postgres:// stops serve with a clear error; so does a store URL that is not s3://', async () => {
    const r = await runCli(['serve', '--data', join(tmp(), 'd'), '--port', '0', '--host', '127.0.0.1', '--store', 's3://bucket-x?endpoint=http://127.0.0.1:1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/chunk catalog in PostgreSQL: give metadata postgres:\/\//);
    const r2 = await runCli(['serve', '--data', join(tmp(), 'd'), '--port', '0', '--host', '127.0.0.1', '--store', 'gs://bucket-x', '--metadata', 'postgres://x@127.0.0.1:1/db']);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/expected s3:\/\/BUCKET/);
  });
});

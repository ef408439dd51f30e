/**
 * The test services of issue 11 (scripts/services/, test/helpers/services.ts):
 * the run's RGW and PostgreSQL answer and are started once per run; the up
 * scripts start a private instance in the directory given, refuse a directory
 * in use, and the down scripts leave no process and no directory behind.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { ListBucketsCommand, S3Client } from '@aws-sdk/client-s3';
import { describe, expect, test } from 'vitest';
import { testPostgres, testS3 } from './helpers/services.js';
import { parseExports, SERVICES, startService, stopService } from './helpers/service-scripts.js';

/** The process exists and is not a zombie waiting for its parent. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** A directory for an up script under /var/tmp (reachable by the postgres user); the script recreates it. */
function scratch(name: string): string {
  const d = mkdtempSync(`/var/tmp/snapyard-svc-test-${name}.`);
  rmSync(d, { recursive: true });
  return d;
}

describe("the run's services", () => {
  test('S3: the same endpoint every time, and the bucket is there', async () => {
    const [a, b] = await Promise.all([testS3(), testS3()]);
    expect(b.url).toBe(a.url);
    expect(a.url).toMatch(/^s3:\/\/[a-z0-9.-]{3,}\?endpoint=http:\/\/127\.0\.0\.1:\d+&region=us-east-1$/);
    expect(process.env.SNAPYARD_TEST_S3).toBe(a.url);
    const s3 = new S3Client({ endpoint: a.endpoint, region: a.region, forcePathStyle: true, credentials: { accessKeyId: a.accessKeyId, secretAccessKey: a.secretAccessKey } });
    const buckets = await s3.send(new ListBucketsCommand({}));
    expect(buckets.Buckets?.map((x) => x.Name)).toContain(a.bucket);
    s3.destroy();
  });

  test('PostgreSQL 15: the same URL every time, and it answers queries', async () => {
    const [a, b] = await Promise.all([testPostgres(), testPostgres()]);
    expect(b).toBe(a);
    expect(a).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/snapyard$/);
    const c = new pg.Client({ connectionString: a });
    await c.connect();
    const r = await c.query<{ server_version: string }>('show server_version');
    expect(r.rows[0]!.server_version).toMatch(/^15\./);
    await c.end();
  });
});

describe('up and down scripts', () => {
  test('rgw: a second private cluster starts, a directory in use is refused, down kills every daemon and removes it', async () => {
    const dir = scratch('rgw');
    const vars = await startService(SERVICES.rgw, dir);
    try {
      expect(vars.SNAPYARD_TEST_S3).toMatch(/endpoint=http:\/\/127\.0\.0\.1:\d+/);
      expect(parseExports(readFileSync(join(dir, 'env'), 'utf8'))).toEqual({ ...vars, CEPH_DIR: dir });
      const pids = readFileSync(join(dir, 'run', 'pids'), 'utf8').trim().split('\n').map((l) => Number(l.split(' ')[1]));
      expect(pids).toHaveLength(3); // mon, osd, rgw
      expect(pids.every(alive)).toBe(true);
      await expect(startService(SERVICES.rgw, dir)).rejects.toThrow(/already in use/);
      expect(pids.every(alive)).toBe(true);
      const endpoint = new URL(vars.SNAPYARD_TEST_S3!.replace(/^s3:/, 'http:')).searchParams.get('endpoint')!;
      expect((await fetch(endpoint)).status).toBe(200);
      await stopService(SERVICES.rgw, dir);
      expect(pids.filter(alive)).toEqual([]);
      expect(existsSync(dir)).toBe(false);
    } finally {
      await stopService(SERVICES.rgw, dir);
    }
  });

  test('pg: a second private server starts, a directory in use is refused, down stops it and removes it', async () => {
    const dir = scratch('pg');
    const vars = await startService(SERVICES.pg, dir);
    try {
      const pid = Number(readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
      expect(alive(pid)).toBe(true);
      await expect(startService(SERVICES.pg, dir)).rejects.toThrow(/in use/);
      const c = new pg.Client({ connectionString: vars.SNAPYARD_TEST_POSTGRES });
      await c.connect();
      expect((await c.query('select 1 as one')).rows).toEqual([{ one: 1 }]);
      await c.end();
      await stopService(SERVICES.pg, dir);
      expect(alive(pid)).toBe(false);
      expect(existsSync(dir)).toBe(false);
    } finally {
      await stopService(SERVICES.pg, dir);
    }
  });
});

/**
 * The S3 (Ceph RGW) and PostgreSQL servers of the tests: real ones, started by
 * scripts/services/*-up.sh on loopback ports.
 *
 * `scripts/test.sh` starts both before vitest and exports SNAPYARD_TEST_S3
 * (`s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=us-east-1`, credentials in
 * AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and SNAPYARD_TEST_POSTGRES
 * (`postgres://postgres@127.0.0.1:PORT/snapyard`); then these helpers just
 * return them. Without them (`npx vitest run test/x.test.ts`), the first test
 * that asks starts the service, once per vitest run, under a lock in the run's
 * directory that test/services-setup.ts made; that setup stops them when the
 * run ends. A service that cannot be started is an error, never a skip.
 *
 * Both are shared by every test file of the run: use a key prefix of your own
 * in the bucket (`(await testS3()).withPrefix(p)`), and a schema or database of your own.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inject } from 'vitest';
import { withFileLock } from '../../client/file-lock.js';
import { parseExports, SERVICES, startService, type ServiceSpec } from './service-scripts.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The directory test/services-setup.ts made for this run's services (empty string: none). */
    snapyardServicesRun: string;
  }
}

export interface TestS3 {
  /** s3://BUCKET?endpoint=http://127.0.0.1:PORT&region=us-east-1 */
  url: string;
  bucket: string;
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** The same settings as a URL with a key prefix: s3://BUCKET/PREFIX?endpoint=... */
  withPrefix(prefix: string): string;
}

const started = new Map<string, Promise<Record<string, string>>>();

/** The service's variables: from the environment, else from this run's instance (started now if no worker did yet). */
async function ensure(spec: ServiceSpec): Promise<Record<string, string>> {
  if (spec.exports.every((k) => process.env[k])) return Object.fromEntries(spec.exports.map((k) => [k, process.env[k]!]));
  let p = started.get(spec.name);
  if (!p) {
    p = (async () => {
      const runDir = inject('snapyardServicesRun');
      if (!runDir) {
        throw new Error(`${spec.exports.join(', ')} not set and no run directory from test/services-setup.ts: run the tests with scripts/test.sh or vitest (vitest.config.ts), or start scripts/services/${spec.name}-up.sh and export what it prints`);
      }
      const dir = join(runDir, spec.name);
      const vars = await withFileLock(join(runDir, `${spec.name}-start`), async () => {
        if (existsSync(join(dir, 'env'))) return parseExports(readFileSync(join(dir, 'env'), 'utf8'));
        return startService(spec, dir);
      }, { waitMs: 5 * 60_000 });
      const missing = spec.exports.filter((k) => !vars[k]);
      if (missing.length > 0) throw new Error(`scripts/services/${spec.name}-up.sh did not export ${missing.join(', ')}`);
      // Processes the tests spawn (snapyard serve --store s3://...) find them where scripts/test.sh would have put them.
      for (const k of spec.exports) process.env[k] = vars[k]!;
      return vars;
    })();
    started.set(spec.name, p);
    p.catch(() => started.delete(spec.name));
  }
  return p;
}

/** The run's S3 endpoint (Ceph RGW) and bucket. */
export async function testS3(): Promise<TestS3> {
  const v = await ensure(SERVICES.rgw);
  const url = v.SNAPYARD_TEST_S3!;
  const u = new URL(url.replace(/^s3:/, 'http:'));
  const endpoint = u.searchParams.get('endpoint');
  if (!endpoint) throw new Error(`SNAPYARD_TEST_S3=${url} has no endpoint`);
  const bucket = u.hostname;
  return {
    url,
    bucket,
    endpoint,
    region: u.searchParams.get('region') ?? 'us-east-1',
    accessKeyId: v.AWS_ACCESS_KEY_ID!,
    secretAccessKey: v.AWS_SECRET_ACCESS_KEY!,
    withPrefix: (prefix) => `s3://${bucket}/${prefix.replace(/^\/+|\/+$/g, '')}${u.search}`,
  };
}

/** The run's PostgreSQL: postgres://postgres@127.0.0.1:PORT/snapyard */
export async function testPostgres(): Promise<string> {
  return (await ensure(SERVICES.pg)).SNAPYARD_TEST_POSTGRES!;
}

/** Both services. */
export async function testServices(): Promise<{ s3: TestS3; postgres: string }> {
  const [s3, postgres] = await Promise.all([testS3(), testPostgres()]);
  return { s3, postgres };
}

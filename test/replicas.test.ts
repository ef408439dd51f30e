/**
 * Replicas (issue 11): two `snapyard serve` processes (bin/snapyard.js, own
 * data directories) over one S3 (Ceph RGW) bucket prefix and one PostgreSQL
 * schema, behind a round-robin TCP proxy (each client connection to the next
 * replica). The CLI pushes, pulls, removes, collects and verifies through
 * the proxy, and skopeo copies a snapshot out and back in through it (a push's requests land on both replicas: its session is shared,
 * storage/coord/coordinator.ts). gc --grace 0s runs during concurrent pushes;
 * one replica is killed with SIGKILL during a push and during a gc.
 * Afterwards verify passes and every committed snapshot pulls byte-exact.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliOk, runCli } from './helpers/cli.js';
import { freshPostgresUrl } from './helpers/metadata-stores.js';
import { makeBaseImage, makeVariant, runTool, standardVariantEdits } from './helpers/qcow2-fixtures.js';
import { startRoundRobinProxy, type RoundRobinProxy } from './helpers/round-robin-proxy.js';
import { emptyS3Prefix } from './helpers/s3-prefix.js';
import { freePort, spawnServe, type ServeProcess } from './helpers/serve-process.js';
import { testS3, type TestS3 } from './helpers/services.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-replicas-');
const sha256File = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

let dir: string;
let s3: TestS3;
let storeUrl: string;
let pgUrl: string;
let proxy: RoundRobinProxy;
const replicas: ServeProcess[] = [];
/** Every snapshot committed so far: ref -> the file pushed. */
const committed = new Map<string, string>();
/** ref -> its manifest digest. */
const digests = new Map<string, string>();

/** A replica: `snapyard serve --store S3 --metadata PG --advertise-url` on data directory `name`. */
async function replica(name: string): Promise<ServeProcess> {
  const port = await freePort();
  const args = ['--data', join(dir, name), '--workers', '1', '--store', storeUrl, '--metadata', pgUrl, '--advertise-url', `http://127.0.0.1:${port}`];
  const s = await spawnServe(args, { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey }, port);
  replicas.push(s);
  return s;
}
const portOf = (s: ServeProcess) => Number(new URL(s.url).port);

const viaProxy = (args: string[]) => [...args, '--registry', proxy.url];
const live = () => replicas.filter((s) => s.child.exitCode === null && s.child.signalCode === null);
/** `snapyard push` through the proxy (or to one replica): its requests land on either replica. */
async function push(ref: string, file: string, to: string = proxy.url): Promise<void> {
  const out = await cliOk(['push', ref, file, '--cache', join(tmp(), 'cache'), '--registry', to, '--json']);
  digests.set(ref, (JSON.parse(out) as { manifestDigest: string }).manifestDigest);
  committed.set(ref, file);
}

/** verify through the proxy exits 0 and every committed snapshot pulls byte-exact (fresh client cache each). */
async function allIntact(): Promise<void> {
  const v = await runCli(viaProxy(['verify', '--json']));
  expect(v.code, v.stdout + v.stderr).toBe(0);
  for (const [ref, file] of committed) {
    const out = join(tmp(), 'pulled.qcow2');
    await cliOk(viaProxy(['pull', ref, '-o', out, '--cache', join(tmp(), 'cache')]));
    expect(sha256File(out), ref).toBe(sha256File(file));
  }
}

beforeAll(async () => {
  dir = tmp();
  s3 = await testS3();
  storeUrl = s3.withPrefix(`replicas-${process.pid}-${randomBytes(4).toString('hex')}`);
  pgUrl = await freshPostgresUrl();
  const a = await replica('data-a');
  const b = await replica('data-b');
  proxy = await startRoundRobinProxy([portOf(a), portOf(b)]);
});

afterAll(async () => {
  await proxy?.close();
  for (const s of replicas) await s.stop();
  if (storeUrl) await emptyS3Prefix(s3, storeUrl);
});

describe('two replicas behind a round-robin proxy', () => {
  test('push of a base and a variant, a skopeo copy out and back in, pulls byte-exact and verify ok, all through the proxy', async () => {
    const base = await makeBaseImage(dir, { scale: 0.25, sizeMiB: 32 });
    const v2 = await makeVariant(dir, base, 'v2');
    await push('rep/img:base', base);
    await push('rep/img:v2', v2);
    await allIntact();
    // skopeo through the proxy too: the snapshot out to an OCI layout and back in under another name
    // (its blob uploads are OCI upload sessions, whichever replica each request reaches), then pulled.
    const host = proxy.url.replace(/^https?:\/\//, '');
    const layout = join(tmp(), 'layout');
    await runTool('skopeo', ['copy', '--preserve-digests', '--src-tls-verify=false', '--src-no-creds', '--dest-oci-accept-uncompressed-layers', `docker://${host}/rep/img:v2`, `oci:${layout}:v2`]);
    await runTool('skopeo', ['copy', '--preserve-digests', '--dest-tls-verify=false', '--dest-no-creds', `oci:${layout}:v2`, `docker://${host}/rep/skopeo:v2`]);
    committed.set('rep/skopeo:v2', v2);
    await allIntact();
    // Both replicas took connections.
    const counts = proxy.counts();
    for (const s of replicas) expect(counts.get(portOf(s)) ?? 0, s.url).toBeGreaterThan(0);
  });

  // A gc on either replica keeps what any replica's open sessions rely on
  // (chunks touched since the oldest session started), whatever the grace.
  test('concurrent pushes through the proxy while two gc --grace 0s loops run through it lose nothing', async () => {
    const images: string[] = [];
    for (const seed of [11, 12]) {
      const b = await makeBaseImage(dir, { seed, scale: 0.1, sizeMiB: 16, name: `small-${seed}` });
      images.push(b, await makeVariant(dir, b, `small-${seed}-v`, standardVariantEdits(seed)));
    }
    let stop = false;
    const gcs: string[] = [];
    const gcLoop = async () => {
      while (!stop || gcs.length < 4) {
        const r = await runCli(viaProxy(['gc', '--grace', '0s', '--json']));
        expect(r.code, r.stdout + r.stderr).toBe(0);
        gcs.push(r.stdout.trim());
      }
    };
    const loops = [gcLoop(), gcLoop()];
    try {
      await Promise.all(images.map((f, i) => push(`rep/small:${i}`, f)));
    } finally {
      stop = true;
      await Promise.all(loops);
    }
    console.log(`concurrent pushes: ${gcs.length} gcs`);
    await allIntact();
  });

  test('kill -9 of a replica during a push and during a gc: the push retried on the survivor commits, verify ok, every committed snapshot pulls byte-exact', async () => {
    const big = await makeBaseImage(dir, { seed: 21, scale: 0.5, sizeMiB: 48, name: 'big' });
    const [a, b] = live() as [ServeProcess, ServeProcess];
    const spool = join(dir, 'data-a', 'remote', 'spool');

    // A push to replica A, killed once A has spooled some of its chunks.
    const pushing = runCli(['push', 'rep/big:1', big, '--cache', join(tmp(), 'cache'), '--registry', a.url]);
    let done = false;
    void pushing.then(() => (done = true));
    while (!done && readdirSync(spool).length === 0) await new Promise((r) => setTimeout(r, 10));
    const midway = !done;
    a.child.kill('SIGKILL');
    const first = await pushing;
    console.log(`push killed mid-way: ${midway}, exit ${first.code} ${first.stderr.trim()}`);
    proxy.setBackends([portOf(b)]);
    await push('rep/big:1', big, b.url);
    await allIntact();

    // A restarted (same data directory: its spool leftovers are dropped), back behind the proxy.
    const a2 = await replica('data-a');
    expect(readdirSync(spool)).toEqual([]);
    proxy.setBackends([portOf(a2), portOf(b)]);
    await allIntact();

    // A gc on A2 with something to collect, killed while it runs.
    await cliOk(viaProxy(['rm', `rep/img@${digests.get('rep/img:v2')!}`]));
    committed.delete('rep/img:v2');
    const collecting = runCli(['gc', '--grace', '0s', '--json', '--registry', a2.url]);
    await new Promise((r) => setTimeout(r, 300));
    a2.child.kill('SIGKILL');
    const gc1 = await collecting;
    console.log(`gc killed mid-way: ${gc1.code !== 0}, exit ${gc1.code} ${gc1.stdout.trim()}`);
    proxy.setBackends([portOf(b)]);
    // The survivor collects (no lock or lease left behind), and nothing committed is lost.
    const gc2 = await runCli(viaProxy(['gc', '--grace', '0s', '--json']));
    expect(gc2.code, gc2.stdout + gc2.stderr).toBe(0);
    console.log(`gc on the survivor: ${gc2.stdout.trim()}`);
    await allIntact();
    const gone = await runCli(viaProxy(['pull', 'rep/img:v2', '-o', join(tmp(), 'gone.qcow2'), '--cache', join(tmp(), 'cache')]));
    expect(gone.code).not.toBe(0);

    const a3 = await replica('data-a');
    proxy.setBackends([portOf(a3), portOf(b)]);
    await allIntact();
  });
});

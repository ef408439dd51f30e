/**
 * `snapyard serve --metadata postgres://...` end to end (issue 11): the CLI
 * (bin/snapyard.js, compiled dist/) starts the registry with its metadata in
 * a fresh schema of the run's PostgreSQL (test/helpers/services.ts); real
 * qcow2 images are pushed and pulled byte-exact with `snapyard push` / `pull`,
 * and `tag`, `rollback`, `rm`, `prune` work against it. The metadata is in
 * PostgreSQL (its tables hold the manifests; no meta.db in the data directory),
 * and survives a restart of the server.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { cliOk, runCli } from './helpers/cli.js';
import { spawnServe, type ServeProcess } from './helpers/serve-process.js';
import { freshPostgresUrl } from './helpers/metadata-stores.js';
import { makeBaseImage, makeVariant } from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-serve-pg-');

/** `snapyard serve --metadata URL` (through SNAPYARD_METADATA when `viaEnv`), once it says it is serving. */
function serve(data: string, metadata: string, viaEnv = false): Promise<ServeProcess> {
  return spawnServe(['--data', data, '--workers', '1', ...(viaEnv ? [] : ['--metadata', metadata])], viaEnv ? { SNAPYARD_METADATA: metadata } : {});
}

const sha256File = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

let dir: string;
let pgUrl: string;
let s: ServeProcess;
const img = { base: '', v2: '' };
const cli = (args: string[]) => cliOk([...args, '--registry', s.url]);
async function cliJson<T>(args: string[]): Promise<T> {
  return JSON.parse((await cli([...args, '--json'])).trim()) as T;
}

beforeAll(async () => {
  dir = tmp();
  pgUrl = await freshPostgresUrl();
  img.base = await makeBaseImage(dir, { scale: 0.25, sizeMiB: 32 });
  img.v2 = await makeVariant(dir, img.base, 'v2');
  s = await serve(join(dir, 'data'), pgUrl);
});

afterAll(async () => {
  await s?.stop();
});

describe('snapyard serve --metadata postgres://', () => {
  test('push, pull byte-exact, tag, rollback, rm, prune; the metadata is in PostgreSQL and survives a restart', async () => {
    const log = JSON.parse(s.log().split('\n').find((l) => l.includes('serving'))!) as { metadata: string };
    expect(log.metadata).toMatch(/^postgres:\/\/postgres@127\.0\.0\.1:\d+\/snapyard$/);
    const push = async (ref: string, file: string) => (await cliJson<{ manifestDigest: string }>(['push', ref, file, '--cache', join(dir, 'push-cache')])).manifestDigest;
    const d1 = await push('pg/img:v1', img.base);
    const d2 = await push('pg/img:v2', img.v2);
    expect(d1).not.toBe(d2);
    for (const [ref, file] of [['pg/img:v1', img.base], ['pg/img:v2', img.v2]] as const) {
      const out = join(dir, `pulled-${ref.split(':')[1]}.qcow2`);
      await cli(['pull', ref, '-o', out]);
      expect(sha256File(out), ref).toBe(sha256File(file));
    }
    expect(existsSync(join(dir, 'data', 'meta.db'))).toBe(false);

    // tag, rollback
    await cli(['tag', 'pg/img:v1', 'stable']);
    await cli(['tag', 'pg/img:v2', 'stable']);
    expect((await cliJson<Array<{ new: string | null }>>(['history', 'pg/img:stable'])).map((h) => h.new)).toEqual([d2, d1]);
    await cli(['rollback', 'pg/img:stable']);
    const back = await cliJson<Array<{ old: string | null; new: string | null; source: string }>>(['history', 'pg/img:stable']);
    expect(back[0]).toMatchObject({ old: d2, new: d1, source: 'rollback' });
    const tooFar = await runCli(['rollback', 'pg/img:stable', '--registry', s.url]);
    expect(tooFar.code).not.toBe(0);
    expect(tooFar.stderr).toMatch(/earlier version/);

    // rm: a tag, then a manifest (with its tags)
    await cli(['tag', 'pg/img:v2', 'scratch']);
    await cli(['rm', 'pg/img:scratch']);
    const tags = await cliJson<Array<{ tags: string[]; digest: string }>>(['ls', 'pg/img']);
    expect(tags.find((x) => x.digest === d2)?.tags.sort()).toEqual(['v2']);

    // prune: keep the newest tag matching v*, and whatever kept snapshots need
    await cli(['tag', 'pg/img:v1', 'v0']);
    const pruned = await cliJson<{ removedTags: Array<{ tag: string }>; removedManifests: string[] }>(['prune', 'pg/img', '--keep', '1', '--match', 'v*']);
    expect(pruned.removedTags.map((t) => t.tag).sort()).toEqual(['v1', 'v2']);
    expect(pruned.removedManifests).toEqual([d2]); // d1 is still tagged stable and v0
    const rmd = await runCli(['pull', 'pg/img:v2', '-o', join(dir, 'gone.qcow2'), '--registry', s.url]);
    expect(rmd.code).not.toBe(0);
    await cli(['rm', `pg/img@${d1}`]);
    expect(await cliJson<unknown[]>(['ls', 'pg/img'])).toEqual([]);

    // The rows are in PostgreSQL; a restarted server (settings from the environment) sees them.
    const d3 = await push('pg/img:again', img.v2);
    const c = new pg.Client(pgUrl);
    await c.connect();
    try {
      const r = await c.query('SELECT digest FROM manifests WHERE repo = $1', ['pg/img']);
      expect(r.rows.map((x) => x.digest)).toEqual([d3]);
      expect((await c.query(`SELECT COUNT(*)::int AS n FROM tag_events WHERE repo = 'pg/img' AND tag = 'stable'`)).rows[0].n).toBe(4);
    } finally {
      await c.end();
    }
    expect(await s.stop()).toBe(0);
    s = await serve(join(dir, 'data'), pgUrl, true);
    const out = join(dir, 'after-restart.qcow2');
    await cli(['pull', 'pg/img:again', '-o', out]);
    expect(sha256File(out)).toBe(sha256File(img.v2));
  });

  test('a metadata URL that is not postgres:// stops serve with a clear error', async () => {
    const r = await runCli(['serve', '--data', join(tmp(), 'd'), '--port', '0', '--host', '127.0.0.1', '--metadata', 'mysql://x@y/z']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/expected a postgres:\/\//);
  });
});

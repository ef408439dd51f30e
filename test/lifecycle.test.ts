/**
 * The lifecycle commands end to end (issue 4): the CLI (bin/snapyard.js,
 * compiled dist/) as a child process against a real registry on a loopback
 * port. Tag moves from `snapyard tag`, `snapyard push` and a raw OCI manifest
 * PUT; rollback; ls; rm; prune; stats, with numbers checked against what the
 * test computes from the files and the server's chunk store.
 *
 * Repositories: lc/hist (history), lc/rb (rollback), lc/img (qcow2 base,
 * two versions of a variant, an overlay: ls and stats), lc/prune (small OCI
 * images: prune rules), lc/base (qcow2 base + overlay: prune keeps a base).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { binaryBytes, makeBaseImage, makeOverlay, makeVariant, subSeed, textBytes } from './helpers/qcow2-fixtures.js';
import { Oci, prng } from './helpers/oci.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDirs } from './helpers/tmp.js';
import { chunkSet } from '../storage/blobs/blob-index.js';
import type { Digest } from '../storage/digest.js';

const BIN = resolve(import.meta.dirname, '..', 'bin', 'snapyard.js');
const execFileP = promisify(execFile);
const newDir = tempDirs('snapyard-lifecycle-');
const KiB = 1024;
const MiB = 1024 * KiB;
const CLI_ENV = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'SNAPYARD_REGISTRY' && k !== 'SNAPYARD_CACHE'));

let s: TestServer;
let oci: Oci;
let dir: string;
const img = { base: '', gamesV1: '', gamesV2: '', ovl: '' };

interface HistoryEntry { time: string; old: string | null; new: string | null; source: string }

/** Runs the CLI against the test registry; rejects on a non-zero exit. */
function cli(args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP(process.execPath, [BIN, ...args, '--registry', s.url], { maxBuffer: 16 * MiB, env: CLI_ENV });
}

async function cliJson<T>(args: string[]): Promise<T> {
  const { stdout } = await cli([...args, '--json']);
  const lines = stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as T;
}

/** The CLI's failure (exit code and stderr); fails the test if the command succeeds. */
async function cliFails(args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await cli(args);
  } catch (e) {
    const err = e as { code: number; stderr: string };
    return { code: err.code, stderr: err.stderr };
  }
  throw new Error(`snapyard ${args.join(' ')} succeeded`);
}

async function push(ref: string, file: string): Promise<string> {
  const { stdout } = await cli(['push', ref, file, '--json', '--cache', `${dir}/push-cache`]);
  return (JSON.parse(stdout) as { manifestDigest: string }).manifestDigest;
}

async function history(ref: string): Promise<HistoryEntry[]> {
  return cliJson<HistoryEntry[]>(['history', ref]);
}

async function tagOf(repo: string, tag: string): Promise<string | null> {
  const r = await fetch(`${s.url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return r.status === 200 ? r.headers.get('docker-content-digest') : null;
}

async function tagList(repo: string): Promise<string[]> {
  const r = await fetch(`${s.url}/v2/${repo}/tags/list`);
  return ((await r.json()) as { tags: string[] }).tags;
}

async function manifestStatus(repo: string, digest: string): Promise<number> {
  return (await fetch(`${s.url}/v2/${repo}/manifests/${digest}`, { method: 'HEAD' })).status;
}

const sha256File = (p: string) => `sha256:${createHash('sha256').update(readFileSync(p)).digest('hex')}`;

/** Small OCI images with distinct random layers, tagged in order (one move each). */
async function pushSmall(repo: string, tags: string[], seed: number): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [i, tag] of tags.entries()) out[tag] = (await oci.pushImage(repo, tag, prng(4096, seed * 100 + i + 1))).digest;
  return out;
}

beforeAll(async () => {
  s = await startTestServer();
  oci = new Oci(s.url);
  dir = newDir();
  img.base = await makeBaseImage(dir, { scale: 0.5 });
  const s2 = (label: string) => subSeed(4, label);
  [img.gamesV1, img.ovl] = await Promise.all([makeVariant(dir, img.base, 'games-v1'), makeOverlay(dir, img.base, 'ovl', ['write -P 0xab 1M 256k'])]);
  img.gamesV2 = await makeVariant(dir, img.gamesV1, 'games-v2', {
    write: [
      { path: 'APPS/GAMES/DOOM.EXE', content: binaryBytes(s2('doom'), 400 * KiB) },
      { path: 'MYDOCS/SAVES.TXT', content: textBytes(s2('saves'), 8 * KiB) },
    ],
  });
}, 60_000);

afterAll(async () => {
  await s?.stop();
});

describe('tag and history', () => {
  test('moves from snapyard tag, snapyard push and a raw OCI manifest PUT are recorded, newest first', async () => {
    const repo = 'lc/hist';
    const { a, b } = await pushSmall(repo, ['a', 'b'], 1);
    const pushed = await push(`${repo}:chan`, img.base); // push publishes with an OCI PUT, marked as a push
    const { stdout } = await cli(['tag', `${repo}:a`, 'chan']);
    expect(stdout).toContain(`${repo}:chan -> ${a}`);
    const bBody = (await oci.req('GET', `/v2/${repo}/manifests/${b}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } }).then((r) => r.text()));
    await oci.pushManifest(repo, 'chan', bBody);
    const h = await history(`${repo}:chan`);
    expect(h.map(({ old, new: n, source }) => ({ old, new: n, source }))).toEqual([
      { old: a, new: b, source: 'oci-put' },
      { old: pushed, new: a, source: 'tag' },
      { old: null, new: pushed, source: 'push' },
    ]);
    for (const e of h) expect(new Date(e.time).toISOString()).toBe(e.time);
    const times = h.map((e) => Date.parse(e.time));
    expect([...times].sort((x, y) => y - x)).toEqual(times);
    // tag by digest, and the text form lists the same moves
    await cli(['tag', `${repo}@${a}`, 'pinned']);
    expect(await tagOf(repo, 'pinned')).toBe(a);
    const text = (await cli(['history', `${repo}:chan`])).stdout.trim().split('\n');
    expect(text).toHaveLength(3);
    expect(text[0]).toMatch(/oci-put$/);
    expect(text[1]).toMatch(/ tag$/);
    // an unknown source tag is a clear error
    const f = await cliFails(['tag', `${repo}:nope`, 'x']);
    expect(f.code).not.toBe(0);
    expect(f.stderr).toMatch(/MANIFEST_UNKNOWN.*nope/);
  });
});

describe('rollback', () => {
  test('default one version, --steps 2, --to, and rollbacks undo rather than toggle', async () => {
    const repo = 'lc/rb';
    const d = await pushSmall(repo, ['a', 'b', 'c', 'd'], 2);
    for (const t of ['a', 'b', 'c', 'd']) await cli(['tag', `${repo}:${t}`, 'chan']);
    expect(await tagOf(repo, 'chan')).toBe(d.d);

    await cli(['rollback', `${repo}:chan`]);
    expect(await tagOf(repo, 'chan')).toBe(d.c);
    await cli(['rollback', `${repo}:chan`]); // a second rollback goes further back, not back to d
    expect(await tagOf(repo, 'chan')).toBe(d.b);
    const { stdout } = await cli(['rollback', `${repo}:chan`, '--to', d.d!]);
    expect(stdout).toContain(`from ${d.b} to ${d.d}`);
    // versions are now a, b, d: two back from d is a
    await cli(['rollback', `${repo}:chan`, '--steps', '2']);
    expect(await tagOf(repo, 'chan')).toBe(d.a);

    const h = await history(`${repo}:chan`);
    expect(h.slice(0, 4).map((e) => [e.old, e.new, e.source])).toEqual([
      [d.d, d.a, 'rollback'],
      [d.b, d.d, 'rollback'],
      [d.c, d.b, 'rollback'],
      [d.d, d.c, 'rollback'],
    ]);
    const tooFar = await cliFails(['rollback', `${repo}:chan`, '--steps', '5']);
    expect(tooFar.stderr).toMatch(/DENIED.*no|has 0 earlier versions|cannot go 5 back/);
  });

  test('a clear error when the target manifest was deleted; the tag stays put', async () => {
    const repo = 'lc/rb2';
    const d = await pushSmall(repo, ['x', 'y'], 3);
    await cli(['tag', `${repo}:x`, 'chan']);
    await cli(['tag', `${repo}:y`, 'chan']);
    await cli(['rm', `${repo}@${d.x}`]);
    expect(await manifestStatus(repo, d.x!)).toBe(404);
    const f = await cliFails(['rollback', `${repo}:chan`]);
    expect(f.code).not.toBe(0);
    expect(f.stderr).toContain('MANIFEST_UNKNOWN');
    expect(f.stderr).toContain(d.x);
    expect(f.stderr).toMatch(/no longer|deleted/);
    expect(await tagOf(repo, 'chan')).toBe(d.y);
    const to = await cliFails(['rollback', `${repo}:chan`, '--to', d.x!]);
    expect(to.stderr).toContain('MANIFEST_UNKNOWN');
  });
});

interface Snap {
  digest: string; tags: string[]; blob: string | null; size: number | null; virtualSize: number | null; storedBytes: number | null;
  layout: string | null; indexDigest: string | null; created: string; base: { subject: string | null; blob: string | null; backingFile: string | null } | null;
}

describe('ls, rm, stats on qcow2 snapshots (lc/img)', () => {
  const repo = 'lc/img';
  const m: Record<string, string> = {};

  beforeAll(async () => {
    m.base = await push(`${repo}:base-v1`, img.base);
    m.gamesV1 = await push(`${repo}:games-v1`, img.gamesV1);
    m.gamesV2 = await push(`${repo}:games-v2`, img.gamesV2);
    m.ovl = await push(`${repo}:ovl-v1`, img.ovl);
  }, 60_000);

  test('ls: repositories, and snapshots with tags, sizes, created and lineage', async () => {
    const repos = await cliJson<Array<{ name: string; snapshots: number; tags: number; created: string }>>(['ls']);
    expect(repos.find((r) => r.name === repo)).toMatchObject({ snapshots: 4, tags: 4 });
    expect(repos.map((r) => r.name)).toContain('lc/hist');
    const snaps = await cliJson<Snap[]>(['ls', repo]);
    expect(snaps).toHaveLength(4);
    const by = (d: string) => snaps.find((x) => x.digest === d)!;
    for (const [key, file] of [['base', img.base], ['gamesV1', img.gamesV1], ['gamesV2', img.gamesV2], ['ovl', img.ovl]] as const) {
      const x = by(m[key]!);
      expect(x).toMatchObject({ blob: sha256File(file), size: statSync(file).size, layout: 'qcow2', virtualSize: 64 * MiB });
      expect(x.storedBytes).toBeGreaterThan(0);
      expect(x.indexDigest).toMatch(/^sha256:/);
      expect(Date.parse(x.created)).toBeGreaterThan(0);
    }
    expect(by(m.base!).tags).toEqual(['base-v1']);
    expect(by(m.base!).base).toBeNull();
    expect(by(m.ovl!).base).toMatchObject({ subject: m.base, blob: sha256File(img.base) });
    expect(by(m.ovl!).base!.backingFile).toContain('base.qcow2');
    const text = (await cli(['ls', repo])).stdout;
    expect(text).toMatch(/^TAGS\s+DIGEST\s+VIRTUAL/);
    expect(text).toContain('games-v2');
  });

  test('stats: logical = sum of image sizes, stored = distinct chunks counted once (checked against the store), dedup, unique bytes, version deltas', async () => {
    const st = await cliJson<{
      snapshots: number; logicalBytes: number; storedBytes: number; dedupRatio: number;
      perSnapshot: Array<{ digest: string; tags: string[]; size: number; storedBytes: number; uniqueBytes: number }>;
      variants: Array<{ variant: string; versions: Array<{ tag: string; version: number }>; deltas: Array<{ from: string; to: string; bytes: number }> }>;
    }>(['stats', repo]);
    const files = [img.base, img.gamesV1, img.gamesV2, img.ovl];
    expect(st.snapshots).toBe(4);
    expect(st.logicalBytes).toBe(files.reduce((n, f) => n + statSync(f).size, 0));
    // Independently: the union of the chunks of the four indexes (plus the indexes), stored record sizes from the store.
    const union = new Set<string>();
    const per: Array<Set<string>> = [];
    for (const f of files) {
      const rec = (await s.store.meta.getBlob(sha256File(f) as Digest))!;
      const keys = new Set(chunkSet(await s.store.blobs.index(rec)).keys());
      keys.add(rec.indexDigest.slice(7));
      per.push(keys);
      for (const k of keys) union.add(k);
    }
    const keys = [...union];
    const lengths = await s.store.chunks.storedLengths(keys.map((k) => Buffer.from(k, 'hex')));
    const storedOf = new Map(keys.map((k, i) => [k, lengths[i]!]));
    const stored = (k: string) => storedOf.get(k)!;
    const sum = (ks: Iterable<string>) => [...ks].reduce((n, k) => n + stored(k), 0);
    expect(st.storedBytes).toBe(sum(union));
    expect(st.dedupRatio).toBeGreaterThan(1);
    expect(st.dedupRatio).toBeCloseTo(st.logicalBytes / st.storedBytes, 2);
    const v2 = st.perSnapshot.find((p) => p.tags.includes('games-v2'))!;
    const v1keys = per[1]!;
    const v2only = [...per[2]!].filter((k) => per.every((o, i) => i === 2 || !o.has(k)));
    expect(v2.uniqueBytes).toBe(sum(v2only));
    expect(v2.uniqueBytes).toBeGreaterThan(0); // DOOM.EXE is new data
    expect(v2.storedBytes).toBe(sum(per[2]!));
    const games = st.variants.find((v) => v.variant === 'games')!;
    expect(games.versions.map((v) => v.tag)).toEqual(['games-v1', 'games-v2']);
    expect(games.deltas).toEqual([{ from: 'games-v1', to: 'games-v2', bytes: sum([...per[2]!].filter((k) => !v1keys.has(k))) }]);
    expect(games.deltas[0]!.bytes).toBeGreaterThan(0);
    expect(games.deltas[0]!.bytes).toBeLessThan(v2.storedBytes / 2);
    // Registry-wide: this repository's line agrees; the whole store holds at least the registry's stored bytes.
    const all = await cliJson<{ storedBytes: number; logicalBytes: number; store: { storedBytes: number }; repositories: Array<{ repository: string; storedBytes: number; logicalBytes: number }> }>(['stats']);
    expect(all.repositories.find((r) => r.repository === repo)).toMatchObject({ storedBytes: st.storedBytes, logicalBytes: st.logicalBytes });
    expect(all.store.storedBytes).toBeGreaterThanOrEqual(all.storedBytes);
    expect(all.logicalBytes).toBeGreaterThanOrEqual(st.logicalBytes);
    expect((await cli(['stats', repo])).stdout).toMatch(/games-v1 -> games-v2: /);
  });

  test('rm: a tag, a manifest by digest (its tags too, recorded), and never a base another snapshot depends on', async () => {
    await cli(['tag', `${repo}:games-v2`, 'games']);
    const t = await cli(['rm', `${repo}:games`]);
    expect(t.stdout).toContain(`removed tag ${repo}:games`);
    expect(await tagOf(repo, 'games')).toBeNull();
    expect(await manifestStatus(repo, m.gamesV2!)).toBe(200);
    expect((await history(`${repo}:games`))[0]).toMatchObject({ old: m.gamesV2, new: null, source: 'rm' });

    const base = await cliFails(['rm', `${repo}@${m.base}`]);
    expect(base.stderr).toMatch(/DENIED.*base of/);
    expect(await manifestStatus(repo, m.base!)).toBe(200);

    await cli(['tag', `${repo}:games-v1`, 'old']);
    const r = await cli(['rm', `${repo}@${m.gamesV1}`]);
    expect(r.stdout).toContain('games-v1');
    expect(await manifestStatus(repo, m.gamesV1!)).toBe(404);
    expect(await tagList(repo)).toEqual(['base-v1', 'games-v2', 'ovl-v1']);
    expect((await history(`${repo}:old`))[0]).toMatchObject({ old: m.gamesV1, new: null, source: 'rm' });
    const snaps = await cliJson<Snap[]>(['ls', repo]);
    expect(snaps.map((x) => x.digest).sort()).toEqual([m.base, m.gamesV2, m.ovl].sort());
  });
});

describe('prune', () => {
  test('keeps the newest N matching tags, --match, --dry-run removes nothing, a manifest another tag points to stays', async () => {
    const repo = 'lc/prune';
    const d = await pushSmall(repo, ['games-v1', 'games-v2', 'games-v3', 'games-v4', 'prod-v1', 'prod-v2'], 5);
    await cli(['tag', `${repo}:games-v2`, 'stable']);
    const before = await tagList(repo);

    const dry = await cliJson<{ dryRun: boolean; kept: Array<{ tag: string; reason: string }>; removedTags: Array<{ tag: string; digest: string }>; removedManifests: string[] }>(
      ['prune', repo, '--keep', '2', '--match', 'games-*', '--dry-run'],
    );
    expect(dry.dryRun).toBe(true);
    expect(dry.kept.map((k) => k.tag)).toEqual(['games-v4', 'games-v3']);
    expect(dry.removedTags.map((t) => t.tag).sort()).toEqual(['games-v1', 'games-v2']);
    expect(dry.removedManifests).toEqual([d['games-v1']]);
    expect(await tagList(repo)).toEqual(before);
    expect(await manifestStatus(repo, d['games-v1']!)).toBe(200);
    const dryText = (await cli(['prune', repo, '--keep', '2', '--match', 'games-*', '--dry-run'])).stdout;
    expect(dryText).toContain(`would remove tag ${repo}:games-v1`);

    const text = (await cli(['prune', repo, '--keep', '2', '--match', 'games-*'])).stdout;
    expect(text).toContain(`removed tag ${repo}:games-v1`);
    expect(text).toContain(`removed manifest ${repo}@${d['games-v1']}`);
    expect(await tagList(repo)).toEqual(['games-v3', 'games-v4', 'prod-v1', 'prod-v2', 'stable']);
    expect(await manifestStatus(repo, d['games-v1']!)).toBe(404);
    expect(await manifestStatus(repo, d['games-v2']!)).toBe(200); // stable points at it
    expect((await history(`${repo}:games-v1`))[0]).toMatchObject({ new: null, source: 'prune' });

    // Without --match every tag is subject to the rule; the newest (last moved) stay.
    const all = await cliJson<{ removedTags: Array<{ tag: string }> }>(['prune', repo, '--keep', '1']);
    expect(all.removedTags.map((t) => t.tag).sort()).toEqual(['games-v3', 'games-v4', 'prod-v1', 'prod-v2']);
    expect(await tagList(repo)).toEqual(['stable']);
  });

  test('never removes a base that a kept snapshot depends on (subject / base blob)', async () => {
    const repo = 'lc/base';
    const base = await push(`${repo}:base-v1`, img.base);
    const games = await push(`${repo}:games-v1`, img.gamesV1);
    const ovl = await push(`${repo}:ovl-v1`, img.ovl);
    const r = await cliJson<{ kept: Array<{ tag: string; reason: string }>; removedTags: Array<{ tag: string }>; removedManifests: string[] }>(['prune', repo, '--keep', '1']);
    expect(r.kept).toEqual([{ tag: 'ovl-v1', digest: ovl, reason: 'newest' }, { tag: 'base-v1', digest: base, reason: 'base' }]);
    expect(r.removedTags.map((t) => t.tag)).toEqual(['games-v1']);
    expect(r.removedManifests).toEqual([games]);
    expect(await tagList(repo)).toEqual(['base-v1', 'ovl-v1']);
    expect(await manifestStatus(repo, base)).toBe(200);
    expect(await manifestStatus(repo, games)).toBe(404);
  });
});

/**
 * The MetadataStore contract (issue 11): one suite run on every
 * implementation, SQLite (temp directory) and PostgreSQL (a fresh schema of
 * the run's server, test/helpers/services.ts), each test on a new store and
 * a clock it moves. Every answer whose order matters is also recorded, and
 * the last block checks both implementations gave the same answers.
 * Replica behaviour (two PostgreSQL stores on one database): metadata-store.postgres.test.ts.
 */
import { afterEach, describe, expect, test } from 'vitest';
import type { Sha512Digest } from '../storage/digest.js';
import type { MetadataStore } from '../storage/meta/metadata-store.js';
import { ANN_BACKING_FILE, ANN_BASE_BLOB } from '../storage/meta/manifest-facts.js';
import { blob, clock, codeOf, digestOf, image, IMPLS, index, type Clock } from './helpers/metadata-stores.js';

const transcripts = new Map<string, Map<string, unknown>>();
const open: MetadataStore[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

describe.each(IMPLS)('MetadataStore contract: $name', (impl) => {
  const answers = new Map<string, unknown>();
  transcripts.set(impl.name, answers);
  /** Records an answer for the cross-implementation comparison, and returns it. */
  const rec = <T>(key: string, v: T): T => {
    answers.set(key, structuredClone(v));
    return v;
  };
  let c: Clock;
  const fresh = async () => {
    c = clock();
    const s = await impl.open(c);
    open.push(s);
    return s;
  };

  test('blobs: commit, link, unlink, totals, repositories', async () => {
    const s = await fresh();
    await s.probe();
    expect(await s.blobTotals()).toEqual({ blobs: 0, bytes: 0 });
    const a = await blob(s, 'r/one', 'a', 300);
    c.t += 10;
    const b = await blob(s, 'r/two', 'b', 50);
    await blob(s, 'r/one', 'a', 300); // again: one record
    expect(await s.getBlob(a.digest)).toEqual({ digest: a.digest, size: 300, indexDigest: digestOf('index of a') });
    expect(await s.getBlob(digestOf('nothing'))).toBeNull();
    expect(await s.blobTotals()).toEqual({ blobs: 2, bytes: 350 });
    expect(await s.isLinked('r/one', a.digest)).toBe(true);
    expect(await s.isLinked('r/one', b.digest)).toBe(false);
    expect(await s.linkBlob('r/one', b.digest)).toBe(true);
    expect(await s.linkBlob('r/three', digestOf('unknown'))).toBe(false);
    expect(await s.repoExists('r/three')).toBe(false); // nothing linked, no repository
    expect(await s.linkBlob('r/three', a.digest)).toBe(true);
    expect(rec('allBlobs', await s.allBlobs())).toEqual([a, b].map((x) => ({ ...x, indexDigest: expect.any(String) })).sort((x, y) => (x.digest < y.digest ? -1 : 1)));
    expect(rec('listRepos', await s.listRepos())).toEqual(['r/one', 'r/three', 'r/two']);
    expect(await s.repoExists('r/two')).toBe(true);
    expect(rec('unlinkEverywhere', await s.unlinkEverywhere(a.digest))).toEqual(['r/one', 'r/three']);
    expect(await s.isLinked('r/three', a.digest)).toBe(false);
    expect(await s.getBlob(a.digest)).not.toBeNull(); // the record stays (gc's business)
    expect(await s.unlinkBlob('r/one', b.digest)).toBe(true);
    expect(await s.unlinkBlob('r/one', b.digest)).toBe(false);
    await s.commitManifest(image('r/two', [b], { tag: 'x' }), 'push');
    expect(rec('repoSummaries', await s.repoSummaries())).toEqual([
      { name: 'r/one', createdMs: c.t - 10, manifests: 0, tags: 0 },
      { name: 'r/three', createdMs: c.t, manifests: 0, tags: 0 },
      { name: 'r/two', createdMs: c.t, manifests: 1, tags: 1 },
    ]);
  });

  test('unlinkBlobIfUnused refuses while a manifest of the repository references the blob', async () => {
    const s = await fresh();
    const l = await blob(s, 'u', 'layer');
    const m1 = image('u', [l], { tag: 'a' });
    const m2 = image('u', [l, await blob(s, 'u', 'other')]);
    await s.commitManifest(m1, 'push');
    await s.commitManifest(m2, 'push');
    const refused = rec('usedBy', await s.unlinkBlobIfUnused('u', l.digest));
    expect(refused).toEqual({ unlinked: false, usedBy: [m1.digest, m2.digest].sort() });
    expect(await s.isLinked('u', l.digest)).toBe(true);
    const lone = await blob(s, 'u', 'lone');
    expect(await s.unlinkBlobIfUnused('u', lone.digest)).toEqual({ unlinked: true, usedBy: [] });
    expect(await s.unlinkBlobIfUnused('u', lone.digest)).toEqual({ unlinked: false, usedBy: [] });
  });

  test('commitManifest: missing references store nothing; optional ones need not be there', async () => {
    const s = await fresh();
    const l = await blob(s, 'elsewhere', 'l1');
    const gone = { digest: digestOf('not pushed'), size: 5 };
    const m = image('m/new', [l, gone], { tag: 'latest' });
    const r = rec('missing', await s.commitManifest(m, 'push'));
    expect(r.missing).toEqual([{ digest: l.digest, kind: 'blob' }, { digest: gone.digest, kind: 'blob' }]); // l is linked elsewhere only
    expect(await s.manifestExists('m/new', m.digest)).toBe(false);
    expect(await s.repoExists('m/new')).toBe(false);
    expect(await s.resolveTag('m/new', 'latest')).toBeNull();
    expect(await s.tagHistory('m/new', 'latest')).toEqual([]);
    // Index over an absent child.
    const ix = index('m/new', [digestOf('no such manifest')], 'ix');
    expect((await s.commitManifest(ix, 'push')).missing).toEqual([{ digest: ix.refs[0]!.digest, kind: 'manifest' }]);

    await s.linkBlob('m/new', l.digest);
    const opt = image('m/new', [l, gone], { tag: 'latest', optional: [gone.digest] });
    expect(await s.commitManifest(opt, 'push')).toEqual({ missing: [] });
    expect(await s.resolveTag('m/new', 'latest')).toBe(opt.digest);
    expect(rec('dangling-optional', await s.danglingRefs())).toEqual([]); // the absent optional ref is not recorded
    expect((await s.manifestsReferencing('m/new', l.digest)).map((x) => x.digest)).toEqual([opt.digest]);
    expect(await s.manifestsReferencing('m/new', gone.digest)).toEqual([]);
    // Present optional refs are recorded.
    await blob(s, 'm/new', 'not pushed', 5);
    const opt2 = image('m/new', [gone], { optional: [gone.digest] });
    await s.commitManifest(opt2, 'push');
    expect((await s.manifestsReferencing('m/new', gone.digest)).map((x) => x.digest)).toEqual([opt2.digest]);
  });

  test('manifests: exact bytes and fields, created time kept on a second commit, facts for listings', async () => {
    const s = await fresh();
    const base = await blob(s, 'f', 'base', 1000);
    const small = await blob(s, 'f', 'small', 10);
    const ann = { [ANN_BASE_BLOB]: base.digest, [ANN_BACKING_FILE]: 'base.qcow2', note: 'ü' };
    const m = image('f', [small, base], { annotations: ann, artifactType: 'application/x-test' });
    await s.commitManifest(m, 'push');
    const t0 = c.t;
    c.t += 1000;
    await s.commitManifest(m, 'push');
    const got = await s.getManifest('f', m.digest);
    expect(got).not.toBeNull();
    expect(Buffer.compare(got!.content, m.content)).toBe(0);
    expect({ ...got!, content: null }).toEqual({
      repo: 'f', digest: m.digest, mediaType: m.mediaType, artifactType: 'application/x-test', subject: null,
      annotations: ann, size: m.content.byteLength, content: null, createdMs: t0,
    });
    const [sum] = rec('facts', await s.listManifests('f'));
    expect(sum).toMatchObject({ imageBlob: base.digest, baseBlob: base.digest, backingFile: 'base.qcow2', children: [], createdMs: t0 });
    // Facts given are taken as they are.
    const g = image('f', [small], { annotations: { a: 'b' } });
    await s.commitManifest({ ...g, facts: { imageBlob: null, baseBlob: small.digest, backingFile: 'x' } }, 'push');
    expect((await s.listManifests('f')).find((x) => x.digest === g.digest)).toMatchObject({ imageBlob: null, baseBlob: small.digest, backingFile: 'x' });
    expect(await s.getManifest('f', digestOf('none'))).toBeNull();
  });

  test('index children, referrers, listing order, manifestsReferencing, deleteManifest', async () => {
    const s = await fresh();
    const l = await blob(s, 'i', 'l');
    const a = image('i', [l], { tag: 'a' });
    const b = image('i', [l], { tag: 'b', annotations: { v: '2' } });
    await s.commitManifest(a, 'push');
    await s.commitManifest(b, 'push'); // same time as a: by digest
    c.t += 5;
    const ix = index('i', [b.digest, a.digest], 'ix');
    await s.commitManifest(ix, 'push');
    c.t += 5;
    const sig1 = image('i', [l], { subject: a.digest, artifactType: 'application/x-sig', annotations: { who: 'first' } });
    await s.commitManifest(sig1, 'push');
    c.t += 5;
    const sig2 = image('i', [l], { subject: a.digest, artifactType: 'application/x-sbom' });
    await s.commitManifest(sig2, 'push');
    const listed = rec('listManifests', await s.listManifests('i'));
    expect(listed.map((x) => x.digest)).toEqual([sig2.digest, sig1.digest, ix.digest, ...[a.digest, b.digest].sort()]);
    expect(listed.find((x) => x.digest === ix.digest)).toMatchObject({ children: [a.digest, b.digest].sort(), imageBlob: null, mediaType: ix.mediaType });
    const refs = rec('referrers', await s.referrers('i', a.digest));
    expect(refs.map((x) => [x.digest, x.artifactType, x.annotations])).toEqual([
      [sig1.digest, 'application/x-sig', { who: 'first' }],
      [sig2.digest, 'application/x-sbom', null],
    ]);
    expect(rec('referencing', (await s.manifestsReferencing('i', l.digest)).map((x) => x.digest))).toEqual([sig2.digest, sig1.digest, ...[a.digest, b.digest].sort()]);
    expect((await s.manifestsReferencing('i', a.digest)).map((x) => x.digest)).toEqual([ix.digest]);
    // Deleting a manifest: its tags go (each recorded), its refs go.
    await s.setTag('i', 'z', ix.digest, 'tag');
    c.t += 5;
    expect(await s.deleteManifest('i', ix.digest, 'rm')).toBe(true);
    expect(await s.deleteManifest('i', ix.digest, 'rm')).toBe(false);
    expect(await s.tagsOf('i', ix.digest)).toEqual([]);
    expect(await s.resolveTag('i', 'z')).toBeNull();
    expect(await s.tagHistory('i', 'ix')).toEqual([
      { tag: 'ix', oldDigest: ix.digest, newDigest: null, atMs: c.t, source: 'rm' },
      { tag: 'ix', oldDigest: null, newDigest: ix.digest, atMs: c.t - 15, source: 'push' },
    ]);
    expect(await s.manifestsReferencing('i', a.digest)).toEqual([]);
    expect(rec('tagRows-after-delete', await s.tagRows('i'))).toEqual([
      { tag: 'a', digest: a.digest, updatedMs: c.t - 20, seq: expect.any(Number) },
      { tag: 'b', digest: b.digest, updatedMs: c.t - 20, seq: expect.any(Number) },
    ]);
  });

  test('tags: set, resolve, list pages, tagsOf, history newest first, rows with a total order', async () => {
    const s = await fresh();
    const l = await blob(s, 't', 'l');
    const m1 = image('t', [l], { annotations: { n: '1' } });
    const m2 = image('t', [l], { annotations: { n: '2' } });
    await s.commitManifest(m1, 'push');
    await s.commitManifest(m2, 'push');
    for (const tag of ['b', 'a', 'C', 'a-1', 'z', '_u']) await s.setTag('t', tag, m1.digest, 'tag');
    expect(await codeOf(s.setTag('t', 'a', digestOf('absent'), 'tag'))).toBe('NOT_FOUND');
    c.t += 7;
    await s.setTag('t', 'a', m2.digest, 'tag');
    await s.setTag('t', 'a', m2.digest, 'tag'); // no move, no event
    c.t += 7;
    await s.setTag('t', 'a', null, 'rm');
    await s.setTag('t', 'gone', null, 'rm'); // nothing to remove, no event
    expect(await s.resolveTag('t', 'a')).toBeNull();
    expect(await s.resolveTag('t', 'b')).toBe(m1.digest);
    expect(rec('listTags-all', await s.listTags('t', 100, ''))).toEqual(['C', '_u', 'a-1', 'b', 'z']); // bytewise
    expect(rec('listTags-page1', await s.listTags('t', 2, ''))).toEqual(['C', '_u']);
    expect(rec('listTags-page2', await s.listTags('t', 2, '_u'))).toEqual(['a-1', 'b']);
    expect(await s.listTags('t', 2, 'z')).toEqual([]);
    expect(rec('tagsOf', await s.tagsOf('t', m1.digest))).toEqual(['C', '_u', 'a-1', 'b', 'z']);
    expect(rec('tagHistory', await s.tagHistory('t', 'a'))).toEqual([
      { tag: 'a', oldDigest: m2.digest, newDigest: null, atMs: c.t, source: 'rm' },
      { tag: 'a', oldDigest: m1.digest, newDigest: m2.digest, atMs: c.t - 7, source: 'tag' },
      { tag: 'a', oldDigest: null, newDigest: m1.digest, atMs: c.t - 14, source: 'tag' },
    ]);
    expect(await s.tagHistory('t', 'gone')).toEqual([]);
    const rows = rec('tagRows', await s.tagRows('t'));
    expect(rows.map((r) => r.tag)).toEqual(['C', '_u', 'a-1', 'b', 'z']);
    const bySeq = [...rows].sort((x, y) => x.seq - y.seq).map((r) => r.tag);
    expect(bySeq).toEqual(['b', 'C', 'a-1', 'z', '_u']); // the order they were set
  });

  test('snapshotsUsing and danglingRefs', async () => {
    const s = await fresh();
    const l = await blob(s, 's', 'shared');
    const other = await blob(s, 's', 'other');
    const m1 = image('s', [l], { tag: 'one' });
    const m2 = image('s', [l, other]); // untagged
    await s.commitManifest(m1, 'push');
    await s.commitManifest(m2, 'push');
    await s.setTag('s', 'also', m1.digest, 'tag');
    const ix = index('s', [m2.digest], 'multi');
    await s.commitManifest(ix, 'push');
    await s.linkBlob('s2', l.digest);
    const m3 = image('s2', [l], { tag: 'x' });
    await s.commitManifest(m3, 'push');
    expect(rec('snapshotsUsing', await s.snapshotsUsing(l.digest))).toEqual(
      ['s:also', 's:multi', 's:one', `s@${m2.digest}`, 's2:x'].sort(),
    );
    expect(await s.snapshotsUsing(other.digest)).toEqual(['s:multi', `s@${m2.digest}`]);
    expect(await s.snapshotsUsing(digestOf('nobody'))).toEqual([]);
    expect(await s.danglingRefs()).toEqual([]);
    await s.unlinkBlob('s', other.digest);
    await s.deleteManifest('s', m2.digest, 'rm');
    expect(rec('dangling', await s.danglingRefs())).toEqual([{ repo: 's', manifest: ix.digest, ref: m2.digest, kind: 'manifest' }]);
    await s.unlinkBlob('s2', l.digest);
    expect((await s.danglingRefs()).map((d) => [d.repo, d.kind])).toEqual([['s', 'manifest'], ['s2', 'blob']]);
  });

  test('lifecycle: moveTag by digest and by tag, removeTag, rollbackTag steps / to / refusals', async () => {
    const s = await fresh();
    const l = await blob(s, 'lc', 'l');
    const v = [1, 2, 3].map((n) => image('lc', [l], { annotations: { v: String(n) } }));
    for (const m of v) await s.commitManifest(m, 'push');
    expect(await s.moveTag('lc', 'app', { digest: v[0]!.digest })).toEqual({ repository: 'lc', tag: 'app', old: null, new: v[0]!.digest });
    c.t += 1;
    expect(await s.moveTag('lc', 'app', { digest: v[1]!.digest })).toMatchObject({ old: v[0]!.digest, new: v[1]!.digest });
    c.t += 1;
    await s.moveTag('lc', 'app', { digest: v[2]!.digest });
    expect(await s.moveTag('lc', 'copy', { tag: 'app' })).toMatchObject({ old: null, new: v[2]!.digest });
    expect(await codeOf(s.moveTag('lc', 'app', { digest: digestOf('x') }))).toBe('MANIFEST_UNKNOWN');
    expect(await codeOf(s.moveTag('lc', 'app', { tag: 'nope' }))).toBe('MANIFEST_UNKNOWN');
    expect(await codeOf(s.moveTag('lc', 'app', { digest: 'not-a-digest' }))).toBe('DIGEST_INVALID');
    c.t += 1;
    expect(rec('rollback1', await s.rollbackTag('lc', 'app', {}))).toEqual({ repository: 'lc', tag: 'app', old: v[2]!.digest, new: v[1]!.digest, steps: 1 });
    expect(await s.rollbackTag('lc', 'app', { steps: 1 })).toMatchObject({ new: v[0]!.digest });
    expect(await codeOf(s.rollbackTag('lc', 'app', { steps: 1 }))).toBe('DENIED'); // no earlier version
    expect(await codeOf(s.rollbackTag('lc', 'app', { steps: 0 }))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(s.rollbackTag('lc', 'app', { steps: 1, to: v[1]!.digest }))).toBe('INVALID_ARGUMENT');
    expect(await s.rollbackTag('lc', 'app', { to: v[2]!.digest })).toMatchObject({ new: v[2]!.digest, steps: null });
    expect(await codeOf(s.rollbackTag('lc', 'app', { to: v[2]!.digest }))).toBe('DENIED'); // already there
    expect(await codeOf(s.rollbackTag('lc', 'nope', {}))).toBe('MANIFEST_UNKNOWN');
    expect(rec('history-lc', (await s.tagHistory('lc', 'app')).map((e) => [e.oldDigest, e.newDigest, e.source]))).toEqual([
      [v[0]!.digest, v[2]!.digest, 'rollback'],
      [v[1]!.digest, v[0]!.digest, 'rollback'],
      [v[2]!.digest, v[1]!.digest, 'rollback'],
      [v[1]!.digest, v[2]!.digest, 'tag'],
      [v[0]!.digest, v[1]!.digest, 'tag'],
      [null, v[0]!.digest, 'tag'],
    ]);
    expect(await s.removeTag('lc', 'copy')).toBe(v[2]!.digest);
    expect(await codeOf(s.removeTag('lc', 'copy'))).toBe('MANIFEST_UNKNOWN');
    expect(await s.manifestExists('lc', v[2]!.digest)).toBe(true); // the manifest stays
  });

  test('lifecycle: removeManifest refuses a base, prune keeps the newest and their bases, dryRun changes nothing', async () => {
    const s = await fresh();
    const baseImg = await blob(s, 'p', 'base image', 5000);
    const base = image('p', [baseImg]);
    const mid = image('p', [await blob(s, 'p', 'mid', 300)]);
    const top = image('p', [await blob(s, 'p', 'top', 200)], { annotations: { [ANN_BASE_BLOB]: baseImg.digest } });
    const other = image('p', [await blob(s, 'p', 'other', 100)]);
    for (const [m, tag] of [[base, 'v1'], [mid, 'v2'], [top, 'v3'], [other, 'keepme']] as const) {
      await s.commitManifest({ ...m, tag }, 'push');
      c.t += 10;
    }
    const denied = await s.removeManifest('p', base.digest).catch((e: { code: string; detail: unknown }) => e);
    expect(denied).toMatchObject({ code: 'DENIED', detail: { dependents: [top.digest] } });
    expect(await codeOf(s.removeManifest('p', digestOf('absent')))).toBe('MANIFEST_UNKNOWN');
    const dry = rec('prune-dry', await s.prune('p', { keep: 1, match: 'v*', dryRun: true }));
    expect(dry).toEqual({
      repository: 'p', keep: 1, match: 'v*', dryRun: true,
      kept: [{ tag: 'v3', digest: top.digest, reason: 'newest' }, { tag: 'v1', digest: base.digest, reason: 'base' }],
      removedTags: [{ tag: 'v2', digest: mid.digest }],
      removedManifests: [mid.digest],
    });
    expect(await s.resolveTag('p', 'v2')).toBe(mid.digest);
    expect(rec('prune', await s.prune('p', { keep: 1, match: 'v*' }))).toEqual({ ...dry, dryRun: false });
    expect(await s.resolveTag('p', 'v2')).toBeNull();
    expect(await s.manifestExists('p', mid.digest)).toBe(false);
    expect((await s.tagHistory('p', 'v2'))[0]).toMatchObject({ source: 'prune', newDigest: null });
    expect(await s.removeManifest('p', top.digest)).toEqual({ repository: 'p', digest: top.digest, removedTags: ['v3'] });
    expect(await s.removeManifest('p', base.digest)).toEqual({ repository: 'p', digest: base.digest, removedTags: ['v1'] });
    expect(rec('prune-all', await s.prune('p', { keep: 0 }))).toMatchObject({ removedTags: [{ tag: 'keepme' }], removedManifests: [other.digest] });
    expect(await s.listManifests('p')).toEqual([]);
  });

  test('upload records', async () => {
    const s = await fresh();
    await s.createUpload('up-0001', 'u/r');
    expect(await s.repoExists('u/r')).toBe(true);
    const t0 = c.t;
    c.t += 50;
    await s.setUploadSize('up-0001', 1234);
    expect(await s.getUpload('up-0001')).toEqual({ id: 'up-0001', repo: 'u/r', size: 1234, createdMs: t0, updatedMs: t0 + 50 });
    await expect(s.createUpload('up-0001', 'u/r')).rejects.toThrow();
    await s.createUpload('up-0002', 'u/r');
    expect(await s.deleteUpload('up-0001')).toBe(true);
    expect(await s.deleteUpload('up-0001')).toBe(false);
    expect(await s.getUpload('up-0001')).toBeNull();
    await s.clearUploads(); // this process's records
    expect(await s.getUpload('up-0002')).toBeNull();
  });

  test('gc: live blobs and stale links by cutoff; dryRun only counts', async () => {
    const s = await fresh();
    const used = await blob(s, 'g', 'used');
    const stale = await blob(s, 'g', 'stale');
    const staleHere = await blob(s, 'g', 'stale here, used elsewhere');
    await s.linkBlob('g2', staleHere.digest);
    await s.commitManifest(image('g', [used], { tag: 't' }), 'push');
    await s.commitManifest(image('g2', [staleHere]), 'push');
    c.t += 1000;
    const cutoff = c.t;
    const fresh1 = await blob(s, 'g', 'fresh');
    expect(rec('gcLive', [...(await s.gcLiveBlobs(cutoff))].sort())).toEqual([used.digest, staleHere.digest, fresh1.digest].sort());
    const dry = rec('gcDry', await s.gcBlobs(cutoff, true));
    expect(dry).toEqual({ unlinked: 2, deleted: [stale.digest] }); // g:stale and g:staleHere unlinked; only stale has no use
    expect(await s.isLinked('g', stale.digest)).toBe(true);
    expect(await s.getBlob(stale.digest)).not.toBeNull();
    const done = rec('gc', await s.gcBlobs(cutoff, false));
    expect(done).toEqual(dry);
    expect(await s.getBlob(stale.digest)).toBeNull();
    expect(await s.isLinked('g', staleHere.digest)).toBe(false);
    expect(await s.isLinked('g2', staleHere.digest)).toBe(true);
    expect(await s.getBlob(fresh1.digest)).not.toBeNull();
    expect(await s.gcBlobs(cutoff, false)).toEqual({ unlinked: 0, deleted: [] });
    expect(await s.blobTotals()).toEqual({ blobs: 3, bytes: 300 });
  });

  test('digest aliases', async () => {
    const s = await fresh();
    const d = digestOf('content');
    const alias = `sha512:${'ab'.repeat(64)}` as Sha512Digest;
    expect(await s.resolveAlias(d)).toBe(d);
    expect(await s.resolveAlias(alias)).toBeNull();
    await s.addAlias(alias, d);
    await s.addAlias(alias, digestOf('other')); // a fact about content: the first stays
    expect(await s.resolveAlias(alias)).toBe(d);
  });

  test('now is injected: every recorded time is the clock', async () => {
    const s = await fresh();
    c.t = 42_000;
    expect(s.now()).toBe(42_000);
    const l = await blob(s, 'n', 'l');
    const m = image('n', [l], { tag: 't' });
    await s.commitManifest(m, 'push');
    expect((await s.getManifest('n', m.digest))!.createdMs).toBe(42_000);
    expect((await s.tagRows('n'))[0]!.updatedMs).toBe(42_000);
    expect((await s.tagHistory('n', 't'))[0]!.atMs).toBe(42_000);
    expect((await s.repoSummaries())[0]!.createdMs).toBe(42_000);
    expect([...(await s.gcLiveBlobs(42_001))]).toEqual([l.digest]); // referenced only: the link (42000) is older
  });
});

describe('both implementations', () => {
  test('give the same answers where order matters', () => {
    const [a, b] = IMPLS.map((i) => transcripts.get(i.name)!);
    expect(a!.size).toBeGreaterThan(20);
    expect([...b!.keys()].sort()).toEqual([...a!.keys()].sort());
    for (const [k, v] of a!) expect(b!.get(k), k).toEqual(v);
  });
});

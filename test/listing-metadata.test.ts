/**
 * Issue 8, defect 7: listings (`_snapshots`, `_stats`, rm's and prune's
 * dependencies) re-parsed every manifest, so a few large deeply nested ones
 * made them take seconds and stalled the server. What they need is now kept
 * in columns at push time. The tests prove listings never read manifest
 * bytes: with every stored manifest's bytes replaced by garbage, listings
 * answer as before. And a store of the previous schema is migrated: its
 * manifests get their listing metadata when it is opened.
 */
import { describe, expect, test } from 'vitest';
import Database from 'better-sqlite3';
import pg from 'pg';
import { join } from 'node:path';
import { startTestServer, testLocal, type TestServer } from './helpers/server.js';
import { Oci, OCI_INDEX, OCI_MANIFEST, prng } from './helpers/oci.js';
import { tempDirs } from './helpers/tmp.js';

const tmp = tempDirs('snapyard-listing-');

/** A platform object nested `depth` levels deep (accepted: platform is opaque to the registry). */
function deep(depth: number): unknown {
  let v: unknown = { os: 'linux' };
  for (let i = 0; i < depth; i++) v = { n: v };
  return v;
}

async function pushSet(oci: Oci): Promise<{ base: string; overlay: string; index: string; baseLayer: string; overlayLayer: string }> {
  const base = await oci.pushImage('lst/r', 'base-v1', prng(300_000, 71));
  const ovLayer = prng(120_000, 72);
  const ov = await oci.pushImage('lst/r', 'base-v2', ovLayer, {
    subject: { mediaType: OCI_MANIFEST, digest: base.digest, size: Buffer.byteLength(base.body) },
    annotations: { 'io.snapyard.base.blob': base.layerDigest, 'io.snapyard.backing-file': 'base.qcow2', big: 'x'.repeat(200_000) },
  });
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { mediaType: OCI_MANIFEST, digest: base.digest, size: Buffer.byteLength(base.body), platform: deep(50) },
      { mediaType: OCI_MANIFEST, digest: ov.digest, size: Buffer.byteLength(ov.body) },
    ],
  };
  const idx = await oci.pushManifest('lst/r', 'all', index, OCI_INDEX);
  return { base: base.digest, overlay: ov.digest, index: idx.digest, baseLayer: base.layerDigest, overlayLayer: ov.layerDigest };
}

async function listing(s: TestServer): Promise<{ snapshots: unknown; stats: unknown }> {
  const snap = await fetch(`${s.url}/snapyard/v1/lst/r/_snapshots`);
  expect(snap.status).toBe(200);
  const stats = await fetch(`${s.url}/snapyard/v1/lst/r/_stats`);
  expect(stats.status).toBe(200);
  return { snapshots: await snap.json(), stats: await stats.json() };
}

/** Every manifest's stored bytes replaced by `garbage`, in the metadata database itself (SQLite meta.db or the PostgreSQL schema). */
async function replaceManifestBytes(s: TestServer, garbage: Buffer): Promise<void> {
  if (s.remote) {
    const c = new pg.Client(s.remote.metadata);
    await c.connect();
    try {
      await c.query('UPDATE manifests SET content = $1', [garbage]);
    } finally {
      await c.end();
    }
    return;
  }
  const db = new Database(join(s.dataDir, 'meta.db'));
  try {
    db.prepare('UPDATE manifests SET content = ?').run(garbage);
  } finally {
    db.close();
  }
}

describe('listings read stored metadata, never manifests (defect 7)', () => {
  test('with every manifest\'s bytes replaced by garbage, _snapshots, _stats and rm\'s dependency check answer as before', async () => {
    const dataDir = tmp();
    const s = await startTestServer({ dataDir });
    try {
      const d = await pushSet(new Oci(s.url));
      const before = await listing(s);
      const snaps = (before.snapshots as { snapshots: Array<{ digest: string; blob: string | null; base: unknown }> }).snapshots;
      const byDigest = new Map(snaps.map((x) => [x.digest, x]));
      expect(byDigest.get(d.base)!.blob).toBe(d.baseLayer);
      expect(byDigest.get(d.overlay)!.blob).toBe(d.overlayLayer);
      expect(byDigest.get(d.overlay)!.base).toEqual({ subject: d.base, blob: d.baseLayer, backingFile: 'base.qcow2' });
      expect(byDigest.get(d.index)!.blob).toBeNull();
      // Garbage where every manifest's bytes were: a listing that parsed them would lose the facts above.
      await replaceManifestBytes(s, Buffer.from('\u0000 not json {{{'));
      expect(await listing(s)).toEqual(before);
      // rm of the base: the overlay (base blob, subject) and the index (child) depend on it.
      const rm = await fetch(`${s.url}/snapyard/v1/lst/r/_manifests/${d.base}`, { method: 'DELETE' });
      expect(rm.status).toBe(409);
      const body = (await rm.json()) as { errors: Array<{ detail: { dependents: string[] } }> };
      expect(new Set(body.errors[0]!.detail.dependents)).toEqual(new Set([d.overlay, d.index]));
    } finally {
      await s.stop();
    }
  });

  testLocal('a store of the previous schema gets the listing metadata of its manifests when opened', 'rewinds the SQLite schema in meta.db', async () => {
    const dataDir = tmp();
    let s = await startTestServer({ dataDir });
    let before: Awaited<ReturnType<typeof listing>>;
    try {
      await pushSet(new Oci(s.url));
      before = await listing(s);
    } finally {
      await s.stop();
    }
    // Back to schema 1: the columns did not exist.
    const db = new Database(join(dataDir, 'meta.db'));
    try {
      db.exec('ALTER TABLE manifests DROP COLUMN image_blob; ALTER TABLE manifests DROP COLUMN base_blob; ALTER TABLE manifests DROP COLUMN backing_file; PRAGMA user_version = 1;');
    } finally {
      db.close();
    }
    s = await startTestServer({ dataDir });
    try {
      expect(await listing(s)).toEqual(before);
    } finally {
      await s.stop();
    }
  });
});

/**
 * Issue 8, defect 1: a chunk whose index row failed to commit must never be
 * counted as stored. The failure is real: another SQLite connection holds
 * the chunk index's write lock, so the store's commit of the rows gives up
 * (SQLITE_BUSY after its 5 s busy timeout), as a full disk makes it give up
 * with SQLITE_FULL. Then the lock goes away and the same blob is pushed
 * again: it must be durable, through a restart, and verify must pass.
 */
import { describe, expect, test } from 'vitest';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { startTestServer } from './helpers/server.js';
import { Oci, prng, sha } from './helpers/oci.js';
import { tempDirs } from './helpers/tmp.js';
import { verifyStore } from '../storage/maintenance/verify.js';

const tmp = tempDirs('snapyard-flush-');

describe('chunk index commit failure (defect 1)', () => {
  test('rows of a failed commit are retried, never reported stored; the blob survives a restart', async () => {
    const dataDir = tmp();
    let s = await startTestServer({ dataDir });
    const blob = prng(600_000, 1234);
    const digest = sha(blob);
    try {
      const oci = new Oci(s.url);
      await oci.pushBlob('d1/r', '{}');
      // Another writer holds index.db's write lock: the ingest's flush cannot commit its rows.
      const other = new Database(join(dataDir, 'store', 'index.db'));
      other.pragma('busy_timeout = 0');
      other.exec('BEGIN IMMEDIATE');
      try {
        const r = await oci.req('POST', `/v2/d1/r/blobs/uploads/?digest=${digest}`, { body: blob });
        expect(r.status).toBeGreaterThanOrEqual(500);
        await r.arrayBuffer();
        expect((await oci.req('HEAD', `/v2/d1/r/blobs/${digest}`)).status).toBe(404);
      } finally {
        other.exec('ROLLBACK');
        other.close();
      }
      // The same blob again: every chunk it needs must be durably indexed before it is committed.
      expect(await oci.pushBlob('d1/r', blob)).toBe(digest);
      await oci.pushManifest('d1/r', 'v1', {
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha('{}'), size: 2 },
        layers: [{ mediaType: 'application/octet-stream', digest, size: blob.byteLength }],
      });
    } finally {
      await s.stop();
    }
    s = await startTestServer({ dataDir });
    try {
      const got = await new Oci(s.url).req('GET', `/v2/d1/r/blobs/${digest}`);
      expect(got.status).toBe(200);
      expect(Buffer.from(await got.arrayBuffer()).equals(blob)).toBe(true);
      const report = await verifyStore(s.store);
      expect(report.problems).toEqual([]);
      expect(report.ok).toBe(true);
    } finally {
      await s.stop();
    }
  });
});

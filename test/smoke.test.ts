import { afterAll, beforeAll, expect, test } from 'vitest';
import { join } from 'node:path';
import { startTestServer, TEST_BACKEND, type TestServer } from './helpers/server.js';

let s: TestServer;
beforeAll(async () => { s = await startTestServer(); });
afterAll(async () => { await s.stop(); });

test('GET /v2/ answers 200 with the API version header', async () => {
  const r = await fetch(`${s.url}/v2/`);
  expect(r.status).toBe(200);
  expect(r.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  expect(await r.json()).toEqual({});
});

test('the test server runs on the backend SNAPYARD_TEST_BACKEND names (local: packs in the data directory; s3: the bucket prefix and schema of its remote)', async () => {
  if (TEST_BACKEND === 's3') {
    expect(s.remote).not.toBeNull();
    expect(String(s.store.chunks)).toContain(s.remote!.store.replace(/\?.*$/, ''));
    expect(() => s.localChunks).toThrow(/local pass only/);
  } else {
    expect(s.remote).toBeNull();
    expect(s.localChunks.root).toBe(join(s.dataDir, 'store'));
  }
});

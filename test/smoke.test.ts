import { afterAll, beforeAll, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';

let s: TestServer;
beforeAll(async () => { s = await startTestServer(); });
afterAll(async () => { await s.stop(); });

test('GET /v2/ answers 200 with the API version header', async () => {
  const r = await fetch(`${s.url}/v2/`);
  expect(r.status).toBe(200);
  expect(r.headers.get('docker-distribution-api-version')).toBe('registry/2.0');
  expect(await r.json()).toEqual({});
});

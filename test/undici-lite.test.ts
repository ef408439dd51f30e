/**
 * client/undici-lite.ts loads undici's dispatchers without its entry point:
 * they must be undici's own classes, with the request API, talking HTTP.
 */
import { createServer } from 'node:http';
import { describe, expect, test } from 'vitest';
import * as undici from 'undici';
import { Agent, Pool } from '../client/undici-lite.js';

describe('undici-lite', () => {
  test('the same classes as undici\'s entry point exports, and their request() answers', async () => {
    expect(Pool).toBe(undici.Pool);
    expect(Agent).toBe(undici.Agent);
    const server = createServer((req, res) => res.end(`${req.method} ${req.url}`));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const pool = new Pool(`http://127.0.0.1:${port}`);
    const agent = new Agent();
    try {
      const a = await pool.request({ method: 'GET', path: '/v2/' });
      expect(await a.body.text()).toBe('GET /v2/');
      const b = await agent.request({ origin: `http://127.0.0.1:${port}`, path: '/token?scope=x', method: 'GET' });
      expect(b.statusCode).toBe(200);
      expect(await b.body.text()).toBe('GET /token?scope=x');
    } finally {
      await pool.close();
      await agent.close();
      server.close();
    }
  });
});

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';

/**
 * Pods on one node open one cache directory at the same moment: each process
 * creates or migrates the same SQLite files (chunk index, sketches, metadata).
 * Exactly one may create the schema; the others must wait and go on.
 */
const root = resolve(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'snapyard-open-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const OPENER = `
const [dir, at] = process.argv.slice(1);
const { LocalChunkStore } = await import(${JSON.stringify(join(root, 'dist/storage/chunks/local-chunk-store.js'))});
const { Metadata } = await import(${JSON.stringify(join(root, 'dist/storage/meta/metadata.js'))});
const { SketchStore } = await import(${JSON.stringify(join(root, 'dist/storage/delta/sketch-store.js'))});
const { mkdirSync } = await import('node:fs');
while (Date.now() < Number(at)) await new Promise((r) => setTimeout(r, 1));
const meta = new Metadata(dir + '/meta.db');
const store = new LocalChunkStore({ root: dir + '/chunks', workers: 0 });
mkdirSync(dir + '/sk', { recursive: true });
new SketchStore(dir + '/sk');
const { digest: d } = await store.add(Buffer.from('chunk ' + (process.pid % 3)));
if (!(await store.has(d))) throw new Error('chunk not found after put');
await store.close();
meta.close();
`;

function run(dir: string, at: number): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', OPENER, dir, String(at)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    p.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    p.on('close', (code) => done({ code, stderr }));
  });
}

describe('a new store opened by several processes at once', () => {
  test('eight openers, five fresh directories: every one opens, none sees a half-made schema', async () => {
    for (let round = 0; round < 5; round++) {
      const dir = join(work, `r${round}`);
      const at = Date.now() + 1500;
      const rs = await Promise.all(Array.from({ length: 8 }, () => run(dir, at)));
      for (const r of rs) expect(r, r.stderr).toMatchObject({ code: 0 });
    }
  }, 120_000);
});

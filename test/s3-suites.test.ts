/**
 * test/s3-suites.txt (the files scripts/test.sh runs again on S3 + PostgreSQL)
 * names files that exist, and accounts for every test file that starts a test
 * server: run on S3 + PostgreSQL, or listed in a comment with the reason why not.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { expect, test } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');

function parse(): { run: string[]; notRun: Map<string, string> } {
  const run: string[] = [];
  const notRun = new Map<string, string>();
  for (const line of readFileSync(join(ROOT, 'test', 's3-suites.txt'), 'utf8').split('\n')) {
    const excluded = /^#\s*(test\/\S+\.test\.ts):\s*(.*)$/.exec(line);
    if (excluded) notRun.set(excluded[1]!, excluded[2]!.trim());
    const path = line.replace(/#.*/, '').trim();
    if (path) run.push(path);
  }
  return { run, notRun };
}

test('s3-suites.txt lists existing files, and every file starting a test server is run there or says why not', () => {
  const { run, notRun } = parse();
  expect(run.length).toBeGreaterThan(10);
  for (const f of run) expect(existsSync(join(ROOT, f)), f).toBe(true);
  for (const f of run) expect(notRun.has(f), `${f} is both run and excluded`).toBe(false);
  for (const [f, why] of notRun) expect(why.length, `${f} needs a reason`).toBeGreaterThan(10);
  const servers = readdirSync(join(ROOT, 'test'))
    .filter((n) => n.endsWith('.test.ts'))
    .map((n) => `test/${n}`)
    .filter((f) => /\b(startTestServer|useRegistry|startLimitedServer)\(/.test(readFileSync(join(ROOT, f), 'utf8')));
  expect(servers.length).toBeGreaterThan(10);
  const unaccounted = servers.filter((f) => !run.includes(f) && !notRun.has(f));
  expect(unaccounted).toEqual([]);
});

/**
 * The web page (issue 14) in a real browser: headless Chromium against a real
 * `snapyard serve` (bin/snapyard.js) with an htpasswd file and access rules.
 * A base, two variants (games, tools) and two versions of each are pushed with
 * the CLI; the page must list them with their sizes, draw the lineage, show
 * the games-v1 -> games-v2 delta `snapyard stats` reports, roll a tag back
 * (checked through the OCI API), hide every action from a pull-only user (and
 * the API refuses it anyway), and let the keyboard reach every action.
 * Screenshots at desktop and narrow widths go to test-artifacts/.
 */
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { binaryBytes, makeBaseImage, makeOverlay, makeVariant, qemuInfo, subSeed, textBytes } from './helpers/qcow2-fixtures.js';
import { cliOk } from './helpers/cli.js';
import { spawnServe, type ServeProcess } from './helpers/serve-process.js';
import { tempDirs } from './helpers/tmp.js';
import { go, launchBrowser, logIn, screenshot, tabOrder, type PageGlobals } from './helpers/browser.js';

const newDir = tempDirs('snapyard-ui-');
const KiB = 1024;
const REPO = 'ui/win98';
/** What the page did reaches the server and the page: waited for (on a loaded machine a click's round trips take a while), not timed. */
const POLL = { timeout: 20_000, interval: 100 };
const USERS = { alice: 'alice-secret', pods: 'pods-secret' };
const ACCESS = `rules:
  - users: [alice]
    repositories: ["*"]
    actions: [pull, push, delete, admin]
  - users: [pods]
    repositories: ["ui/*"]
    actions: [pull]
`;

let srv: ServeProcess;
let browser: Browser;
let dir: string;
const files: Record<string, string> = {};
const digests: Record<string, string> = {};

const basic = (u: keyof typeof USERS) => `Basic ${Buffer.from(`${u}:${USERS[u]}`).toString('base64')}`;
const env = (u: keyof typeof USERS) => ({ SNAPYARD_USERNAME: u, SNAPYARD_PASSWORD: USERS[u] });

async function tagDigest(tag: string): Promise<string | null> {
  const r = await fetch(`${srv.url}/v2/${REPO}/manifests/${tag}`, { method: 'HEAD', headers: { authorization: basic('alice'), accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return r.status === 200 ? r.headers.get('docker-content-digest') : null;
}

beforeAll(async () => {
  dir = newDir();
  const htpasswd = join(dir, 'htpasswd');
  for (const [u, p] of Object.entries(USERS)) await cliOk(['passwd', htpasswd, u], { input: `${p}\n` });
  writeFileSync(join(dir, 'access.yaml'), ACCESS);
  srv = await spawnServe(['--data', join(dir, 'data'), '--htpasswd', htpasswd, '--access', join(dir, 'access.yaml')]);
  files.base = await makeBaseImage(dir, { scale: 0.5 });
  const s2 = (label: string) => subSeed(14, label);
  [files['games-v1'], files['tools-v1']] = await Promise.all([makeVariant(dir, files.base, 'games-v1'), makeOverlay(dir, files.base, 'tools-v1', ['write -P 0xab 1M 256k'])]);
  [files['games-v2'], files['tools-v2']] = await Promise.all([
    makeVariant(dir, files['games-v1']!, 'games-v2', { write: [{ path: 'APPS/GAMES/DOOM.EXE', content: binaryBytes(s2('doom'), 400 * KiB) }, { path: 'MYDOCS/SAVES.TXT', content: textBytes(s2('saves'), 8 * KiB) }] }),
    makeOverlay(dir, files.base, 'tools-v2', ['write -P 0xab 1M 256k', 'write -P 0x3c 12M 512k'], 9),
  ]);
  for (const tag of ['base-v1', 'games-v1', 'games-v2', 'tools-v1', 'tools-v2']) {
    const file = files[tag === 'base-v1' ? 'base' : tag]!;
    const out = await cliOk(['push', `${REPO}:${tag}`, file, '--json', '--cache', join(dir, 'cache'), '--registry', srv.url], { env: env('alice') });
    digests[tag] = (JSON.parse(out) as { manifestDigest: string }).manifestDigest;
  }
  // A channel tag with a history: games-v1, then games-v2.
  await cliOk(['tag', `${REPO}:games-v1`, 'channel', '--registry', srv.url], { env: env('alice') });
  await cliOk(['tag', `${REPO}:games-v2`, 'channel', '--registry', srv.url], { env: env('alice') });
  browser = await launchBrowser();
}, 180_000);

afterAll(async () => {
  await browser?.close();
  await srv?.stop();
});

async function newPage(): Promise<Page> {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  return ctx.newPage();
}

describe('serving the page', () => {
  test('/ redirects to /ui/; the shell and its assets are served compressed, with ETags and long caching for hashed assets', async () => {
    const root = await fetch(`${srv.url}/`, { redirect: 'manual' });
    expect(root.status).toBe(302);
    expect(root.headers.get('location')).toBe('/ui/');
    const shell = await fetch(`${srv.url}/ui/some/client/route`, { headers: { 'accept-encoding': 'gzip' } });
    expect(shell.status).toBe(200);
    expect(shell.headers.get('cache-control')).toBe('no-cache');
    const html = await shell.text();
    const js = /src="(\/ui\/assets\/main-[A-Z0-9]+\.js)"/.exec(html)?.[1];
    expect(js).toBeDefined();
    const a = await fetch(`${srv.url}${js}`, { headers: { 'accept-encoding': 'br, gzip' } });
    expect(a.status).toBe(200);
    expect(a.headers.get('content-encoding')).toBe('br');
    expect(a.headers.get('cache-control')).toContain('immutable');
    expect((await a.text()).length).toBeGreaterThan(1000);
    const again = await fetch(`${srv.url}${js}`, { headers: { 'if-none-match': a.headers.get('etag')! } });
    expect(again.status).toBe(304);
    expect((await fetch(`${srv.url}/ui/assets/nope.js`)).status).toBe(404);
  });

  test('serve --no-ui serves no page; the admin API stays', async () => {
    const off = await spawnServe(['--data', join(newDir(), 'data'), '--no-ui']);
    try {
      expect((await fetch(`${off.url}/ui/`)).status).toBe(404);
      expect((await fetch(`${off.url}/`)).status).toBe(404);
      expect((await fetch(`${off.url}/snapyard/v1/_admin/status`)).status).toBe(200);
    } finally {
      await off.stop();
    }
  });
});

describe('the page as an admin', () => {
  test('repositories and versions with the right sizes, the games-v1 -> games-v2 delta of snapyard stats, the lineage graph', async () => {
    const page = await newPage();
    await page.goto(`${srv.url}/ui/`);
    await page.getByRole('link', { name: 'log in', exact: true }).waitFor(); // anonymous callers may read nothing here
    await logIn(page, srv.url, 'alice', USERS.alice);
    const row = page.locator(`#repos tr[data-repo="${REPO}"]`);
    await expect.poll(() => row.locator('[data-k=snapshots]').textContent(), POLL).toBe('5');
    const logical = Object.keys(digests).reduce((n, t) => n + statSync(files[t === 'base-v1' ? 'base' : t]!).size, 0);
    expect(Number(await row.locator('[data-k=logical]').getAttribute('data-bytes'))).toBe(logical);
    await screenshot(page, 'repositories', 1280, 900);

    await row.getByRole('link', { name: REPO }).click();
    await page.locator('#versions tr[data-tag="games-v2"]').waitFor();
    const families = await page.locator('#versions tbody').evaluateAll((els) => els.map((e) => e.getAttribute('data-family')));
    expect(families).toEqual(['base', 'channel', 'games', 'tools']);
    for (const tag of ['base-v1', 'games-v1', 'games-v2', 'tools-v1', 'tools-v2']) {
      const tr = page.locator(`#versions tr[data-tag="${tag}"]`);
      const file = files[tag === 'base-v1' ? 'base' : tag]!;
      expect(Number(await tr.locator('[data-k=size]').getAttribute('data-bytes'))).toBe(statSync(file).size);
      expect(Number(await tr.locator('[data-k=virtual]').getAttribute('data-bytes'))).toBe((await qemuInfo(file)).virtualSize);
      expect(await tr.getAttribute('data-digest')).toBe(digests[tag]);
    }
    const stats = JSON.parse(await cliOk(['stats', REPO, '--json', '--registry', srv.url], { env: env('alice') })) as { variants: Array<{ variant: string; deltas: Array<{ from: string; to: string; bytes: number }> }>; perSnapshot: Array<{ digest: string; storedBytes: number; uniqueBytes: number }> };
    const games = stats.variants.find((v) => v.variant === 'games')!.deltas.find((d) => d.to === 'games-v2')!;
    expect(games.from).toBe('games-v1');
    const shown = await page.locator('#versions tr[data-tag="games-v2"] [data-k=delta]').getAttribute('data-bytes');
    expect(Number(shown)).toBe(games.bytes);
    expect(games.bytes).toBeGreaterThan(0);
    for (const s of stats.perSnapshot) {
      const tr = page.locator(`#versions tr[data-digest="${s.digest}"]`).first();
      expect(Number(await tr.locator('[data-k=stored]').getAttribute('data-bytes'))).toBe(s.storedBytes);
      expect(Number(await tr.locator('[data-k=unique]').getAttribute('data-bytes'))).toBe(s.uniqueBytes);
    }
    await screenshot(page, 'repository', 1280, 900);
    await screenshot(page, 'repository', 390, 844);

    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByRole('link', { name: 'Lineage graph' }).click();
    await page.locator('#lineage').waitFor();
    const nodes = await page.locator('#lineage .node').evaluateAll((els) => els.map((e) => e.getAttribute('data-digest')).sort());
    expect(nodes).toEqual(Object.values(digests).sort());
    const edges = await page.locator('#lineage .edge').evaluateAll((els) => els.map((e) => `${e.getAttribute('data-from')}>${e.getAttribute('data-to')}:${e.getAttribute('data-kind')}:${e.getAttribute('data-bytes')}`).sort());
    const d = digests;
    const edge = (a: string, b: string, kind: string, bytes: number | string) => `${d[a]}>${d[b]}:${kind}:${bytes}`;
    expect(edges.map((e) => e.replace(/:\d+$/, ':N'))).toEqual([edge('base-v1', 'tools-v1', 'base', 'N'), edge('base-v1', 'tools-v2', 'base', 'N'), edge('games-v1', 'games-v2', 'version', 'N'), edge('tools-v1', 'tools-v2', 'version', 'N')].sort());
    expect(edges).toContain(edge('games-v1', 'games-v2', 'version', games.bytes));
    await screenshot(page, 'lineage', 1280, 900);

    await go(page, `#/r/${encodeURIComponent(REPO)}/s/games-v2`);
    await page.locator('#image [data-k=virtualSize]').waitFor();
    expect(await page.locator('#image [data-k=format] dd').textContent()).toBe('qcow2');
    expect(await page.locator('pre code').first().textContent()).toBe(`snapyard pull ${REPO}:games-v2 -o disk.qcow2 --registry ${srv.url}`);
    await screenshot(page, 'snapshot', 390, 844);
    await page.context().close();
  });

  test('a rollback done in the page moves the tag (seen through the OCI API); the timeline shows it', async () => {
    expect(await tagDigest('channel')).toBe(digests['games-v2']);
    const page = await newPage();
    await logIn(page, srv.url, 'alice', USERS.alice);
    await go(page, `#/r/${encodeURIComponent(REPO)}/tag/channel`);
    await page.locator('#timeline li').first().waitFor();
    expect(await page.locator('#current').getAttribute('data-digest')).toBe(digests['games-v2']);
    await page.locator('.actions > button[data-action=rollback]').first().click();
    await page.locator('button[data-action=confirm-rollback]').click();
    await expect.poll(() => page.locator('#current').getAttribute('data-digest'), POLL).toBe(digests['games-v1']);
    expect(await tagDigest('channel')).toBe(digests['games-v1']);
    expect(await page.locator('#timeline li').first().getAttribute('data-source')).toBe('rollback');
    await screenshot(page, 'history', 1280, 900);
    await page.context().close();
  });

  test('the keyboard (Tab) reaches every action of the repository page', async () => {
    const page = await newPage();
    await logIn(page, srv.url, 'alice', USERS.alice);
    await go(page, `#/r/${encodeURIComponent(REPO)}`);
    await page.locator('#versions tr[data-tag="games-v2"]').waitFor();
    const actions = await page.locator('button[data-action]').evaluateAll((els) => els.map((e) => `${e.getAttribute('data-action')}|${e.closest('[data-tag]')?.getAttribute('data-tag') ?? ''}`));
    expect(actions.length).toBeGreaterThanOrEqual(6 * 3 + 1);
    const reached = new Set((await tabOrder(page, actions.length + 60)).map((s) => s.split('|').slice(1, 3).join('|')));
    for (const a of actions) expect(reached, a).toContain(a);
    const focusVisible = await page.evaluate(() => {
      const w = globalThis as unknown as PageGlobals;
      return w.getComputedStyle(w.document.activeElement!).outlineStyle;
    });
    expect(focusVisible).not.toBe('none');
    await page.context().close();
  });
  test('a tag removed in the page is gone; prune and gc show a dry-run preview that changes nothing, then run when confirmed', async () => {
    for (const t of ['old-1', 'old-2', 'old-3']) await cliOk(['tag', `${REPO}:games-v1`, t, '--registry', srv.url], { env: env('alice') });
    const page = await newPage();
    await logIn(page, srv.url, 'alice', USERS.alice);
    await go(page, `#/r/${encodeURIComponent(REPO)}`);
    await page.locator('#versions tr[data-tag="old-3"]').waitFor();
    await page.locator('tr[data-tag="old-3"] button[data-action=remove]').click();
    await page.locator('button[data-action=confirm-remove]').click();
    await expect.poll(() => tagDigest('old-3'), POLL).toBeNull();

    await page.getByLabel('Keep the newest').fill('0');
    await page.getByLabel('tags matching').fill('old-*');
    await page.locator('button[data-action=prune-preview]').click();
    const preview = page.getByRole('group', { name: 'Prune preview' });
    await preview.waitFor();
    expect(await preview.textContent()).toMatch(/Would remove 2 tag\(s\) \((old-1, old-2|old-2, old-1)\) and 0 snapshot/);
    expect(await tagDigest('old-1')).toBe(digests['games-v1']);
    await page.locator('button[data-action=prune-confirm]').click();
    await expect.poll(() => tagDigest('old-1'), POLL).toBeNull();
    expect(await tagDigest('old-2')).toBeNull();
    expect(await tagDigest('games-v1')).toBe(digests['games-v1']);

    const lastGc = async () => ((await (await fetch(`${srv.url}/snapyard/v1/_admin/status`, { headers: { authorization: basic('alice') } })).json()) as { lastGc: { dryRun: boolean } | null }).lastGc;
    expect(await lastGc()).toBeNull();
    await go(page, '#/status');
    await page.locator('button[data-action=gc-preview]').click();
    await page.getByRole('group', { name: 'gc preview' }).waitFor();
    expect((await lastGc())?.dryRun).toBe(true);
    await page.locator('button[data-action=gc-confirm]').click();
    await expect.poll(async () => (await lastGc())?.dryRun, POLL).toBe(false);
    await screenshot(page, 'status', 1280, 900);
    await page.context().close();
  });
});

describe('a pull-only user', () => {
  test('sees the data but no action, and the API refuses an action posted anyway', async () => {
    const page = await newPage();
    await logIn(page, srv.url, 'pods', USERS.pods);
    await go(page, `#/r/${encodeURIComponent(REPO)}`);
    await page.locator('#versions tr[data-tag="games-v2"]').waitFor();
    expect(await page.locator('button[data-action]').count()).toBe(0);
    await go(page, `#/r/${encodeURIComponent(REPO)}/tag/channel`);
    await page.locator('#timeline li').first().waitFor();
    expect(await page.locator('button[data-action]').count()).toBe(0);
    await go(page, '#/status');
    await page.locator('#status').waitFor();
    expect(await page.locator('button[data-action]').count()).toBe(0);
    await page.context().close();
    const before = await tagDigest('channel');
    const post = (path: string, body: unknown) => fetch(`${srv.url}/snapyard/v1/${REPO}/${path}`, { method: 'POST', headers: { authorization: basic('pods'), 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post('_tags/channel/_rollback', { steps: 1 })).status).toBe(403);
    expect((await post('_prune', { keep: 0, dryRun: false })).status).toBe(403);
    expect((await fetch(`${srv.url}/snapyard/v1/_admin/gc`, { method: 'POST', headers: { authorization: basic('pods'), 'content-type': 'application/json' }, body: '{"dryRun":true}' })).status).toBe(403);
    expect(await tagDigest('channel')).toBe(before);
  });
});

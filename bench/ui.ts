/**
 * Issue 14's figures: the web page's first screen on a repository of
 * --snapshots (1000) snapshots and --events (10000) tag events.
 *
 *   npx tsx bench/ui.ts IMAGE [--snapshots 1000] [--events 10000] [--runs 5] [--json]
 *
 * IMAGE (a qcow2) is pushed with `snapyard push` as the repository's first
 * snapshot; the others are small distinct OCI images (one 16 KiB layer each,
 * tags app-v1..app-vN: one family of N versions) made through the OCI API, and
 * the events are moves of one tag (`channel`) through the admin API. Not timed.
 *
 * Timed, against the same on a repository holding IMAGE alone (the reference,
 * same run): the first screen's admin API calls (grants, _overview, _versions
 * page, the tag history page) as HTTP round trips on loopback, the first call
 * after the repository changed (its view is computed) and warm medians; the
 * browser's time from navigation to the first screen rendered (headless
 * Chromium, a fresh context each run: assets fetched too); the page weight
 * (every asset of the page, gzip and brotli, as served).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { BIN, startServer, timed } from './lib.js';
import { launchBrowser } from '../test/helpers/browser.js';

const { values: o, positionals } = parseArgs({ allowPositionals: true, options: { snapshots: { type: 'string', default: '1000' }, events: { type: 'string', default: '10000' }, runs: { type: 'string', default: '5' }, json: { type: 'boolean', default: false } } });
const image = positionals[0];
if (!image) {
  console.error('usage: npx tsx bench/ui.ts IMAGE [--snapshots 1000] [--events 10000] [--runs 5] [--json]');
  process.exit(2);
}
const N = Number(o.snapshots);
const EVENTS = Number(o.events);
const RUNS = Number(o.runs);
const log = (s: string) => console.error(s);
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function ok(r: Promise<Response>, what: string): Promise<Response> {
  const res = await r;
  if (!res.ok) throw new Error(`${what}: ${res.status} ${await res.text()}`);
  return res;
}

async function pool<T>(items: T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (i < items.length) await fn(items[i++]!);
  }));
}

const dir = mkdtempSync(join(tmpdir(), 'snapyard-bench-ui-'));
const srv = await startServer(join(dir, 'data'));
try {
  const url = srv.url;
  const BIG = 'bench/ui';
  const ONE = 'bench/one';
  for (const repo of [BIG, ONE]) execFileSync(process.execPath, [BIN, 'push', `${repo}:base-v1`, image, '--registry', url, '--cache', join(dir, 'cache')], { stdio: 'ignore' });
  execFileSync(process.execPath, [BIN, 'tag', `${ONE}:base-v1`, 'channel', '--registry', url], { stdio: 'ignore' });
  log(`populating ${BIG}: ${N - 1} small snapshots, ${EVENTS} tag events`);
  const config = Buffer.from('{}');
  await ok(fetch(`${url}/v2/${BIG}/blobs/uploads/?digest=${sha(config)}`, { method: 'POST', body: config }), 'config');
  const t0 = performance.now();
  await pool(Array.from({ length: N - 1 }, (_, i) => i + 1), 8, async (i) => {
    const layer = randomBytes(16 * 1024);
    await ok(fetch(`${url}/v2/${BIG}/blobs/uploads/?digest=${sha(layer)}`, { method: 'POST', body: layer }), 'layer');
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(config), size: 2 }, layers: [{ mediaType: 'application/octet-stream', digest: sha(layer), size: layer.length }] }));
    await ok(fetch(`${url}/v2/${BIG}/manifests/app-v${i}`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: manifest }), 'manifest');
  });
  for (let k = 0; k < EVENTS; k++) {
    await ok(fetch(`${url}/snapyard/v1/${BIG}/_tags/channel`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ target: `app-v${(k % (N - 1)) + 1}` }) }), 'tag move');
  }
  log(`populated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const calls = (repo: string) => [
    `/snapyard/v1/_admin/grants?repository=${encodeURIComponent(repo)}`,
    `/snapyard/v1/${repo}/_overview`,
    `/snapyard/v1/${repo}/_versions?sort=family&n=50&offset=0`,
    `/snapyard/v1/${repo}/_tags/channel/_history?n=50&offset=0`,
  ];
  const screen = async (repo: string) => {
    const each: number[] = [];
    for (const c of calls(repo)) each.push((await timed(async () => (await ok(fetch(`${url}${c}`), c)).arrayBuffer())).seconds);
    return each;
  };
  // The first calls after the repository changed compute its view (every snapshot's chunk index read once).
  const cold = { big: await screen(BIG), one: await screen(ONE) };
  const warm = { big: [] as number[][], one: [] as number[][] };
  for (let r = 0; r < RUNS; r++) {
    warm.big.push(await screen(BIG));
    warm.one.push(await screen(ONE));
  }
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  // One more push: the next screen reads only the new snapshot's chunk index (server/admin/repo-view.ts).
  const extra = randomBytes(16 * 1024);
  await ok(fetch(`${url}/v2/${BIG}/blobs/uploads/?digest=${sha(extra)}`, { method: 'POST', body: extra }), 'layer');
  await ok(fetch(`${url}/v2/${BIG}/manifests/app-v${N}`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha(config), size: 2 }, layers: [{ mediaType: 'application/octet-stream', digest: sha(extra), size: extra.length }] }) }), 'manifest');
  const afterPush = await screen(BIG);
  // The lineage graph (its own page, not the first screen): every version edge's delta, the first time and cached.
  const lineage = [];
  for (let r = 0; r < 2; r++) lineage.push((await timed(async () => (await ok(fetch(`${url}/snapyard/v1/${BIG}/_lineage?n=200`), 'lineage')).arrayBuffer())).seconds);

  const browser = await launchBrowser();
  const render = async (repo: string, hash: string, ready: string) => {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    const t = await timed(async () => {
      await page.goto(`${url}/ui/${hash}`);
      await page.locator(ready).first().waitFor();
    });
    await ctx.close();
    return t.seconds;
  };
  const e = encodeURIComponent;
  const pages = {
    repo: (repo: string) => render(repo, `#/r/${e(repo)}`, '#versions tbody tr[data-tag]'),
    history: (repo: string) => render(repo, `#/r/${e(repo)}/tag/channel`, '#timeline li'),
    lineage: (repo: string) => render(repo, `#/r/${e(repo)}/lineage`, '#lineage .node'),
  };
  const browserTimes = { repo: { big: [] as number[], one: [] as number[] }, history: { big: [] as number[], one: [] as number[] }, lineage: { big: [] as number[], one: [] as number[] } };
  for (let r = 0; r < RUNS; r++) {
    for (const p of ['repo', 'history', 'lineage'] as const) {
      browserTimes[p].big.push(await pages[p](BIG));
      browserTimes[p].one.push(await pages[p](ONE));
    }
  }
  await browser.close();

  // Page weight: the shell and every asset it references, compressed as served.
  const weigh = async (enc: string) => {
    const get = async (p: string) => {
      const r = await ok(fetch(`${url}${p}`, { headers: { 'accept-encoding': enc } }), p);
      const body = Buffer.from(await r.arrayBuffer());
      return { len: Number(r.headers.get('content-length') ?? body.length), text: r.headers.get('content-encoding') ? '' : body.toString() };
    };
    const shell = await fetch(`${url}/ui/`).then((r) => r.text());
    const assets = [...shell.matchAll(/(?:src|href)="(\/ui\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    let total = (await get('/ui/')).len;
    for (const a of assets) total += (await get(a)).len;
    return { bytes: total, files: assets.length + 1 };
  };
  const weight = { gzip: await weigh('gzip'), br: await weigh('br') };

  const ms = (s: number) => Math.round(s * 1000 * 10) / 10;
  const report = {
    snapshots: N,
    tagEvents: EVENTS,
    server: {
      calls: calls(BIG).map((c) => c.replace(BIG, 'REPO').replace(e(BIG), 'REPO')),
      coldMs: { big: cold.big.map(ms), one: cold.one.map(ms), totalBig: ms(sum(cold.big)) },
      afterOnePushMs: { big: afterPush.map(ms), total: ms(sum(afterPush)) },
      warmMedianMs: { big: calls(BIG).map((_, i) => ms(median(warm.big.map((w) => w[i]!)))), one: calls(ONE).map((_, i) => ms(median(warm.one.map((w) => w[i]!)))) },
      warmTotalMs: { big: ms(median(warm.big.map(sum))), one: ms(median(warm.one.map(sum))), ratio: Math.round((median(warm.big.map(sum)) / median(warm.one.map(sum))) * 100) / 100 },
    },
    lineageMs: { first: ms(lineage[0]!), cached: ms(lineage[1]!) },
    browser: Object.fromEntries((['repo', 'history', 'lineage'] as const).map((p) => [p, { firstMs: ms(browserTimes[p].big[0]!), medianMs: ms(median(browserTimes[p].big)), referenceMedianMs: ms(median(browserTimes[p].one)), ratio: Math.round((median(browserTimes[p].big) / median(browserTimes[p].one)) * 100) / 100 }])),
    pageWeight: { gzipBytes: weight.gzip.bytes, brotliBytes: weight.br.bytes, files: weight.gzip.files },
    goals: {
      serverUnder1s: sum(cold.big) < 1 && sum(afterPush) < 1,
      browserUnder1s: median(browserTimes.repo.big) < 1 && median(browserTimes.history.big) < 1,
      weightUnder300KB: weight.gzip.bytes < 300 * 1024,
    },
  };
  if (o.json) console.log(JSON.stringify(report));
  else {
    const r = report;
    console.log(`repository of ${N} snapshots, ${EVENTS} tag events (reference: the same image alone)`);
    console.log(`server, first screen's 4 API calls (${r.server.calls.join(', ')}):`);
    console.log(`  first after the change (view computed): ${r.server.coldMs.big.join(' + ')} = ${r.server.coldMs.totalBig} ms  (reference ${r.server.coldMs.one.join(' + ')} ms)  ${r.goals.serverUnder1s ? 'PASS' : 'FAIL'} < 1 s`);
    console.log(`  first after one more push (its snapshot counted in): ${r.server.afterOnePushMs.big.join(' + ')} = ${r.server.afterOnePushMs.total} ms`);
    console.log(`  warm median: ${r.server.warmMedianMs.big.join(' + ')} = ${r.server.warmTotalMs.big} ms vs ${r.server.warmTotalMs.one} ms (${r.server.warmTotalMs.ratio}x)`);
    console.log(`lineage graph API (newest 200 snapshots, not the first screen): ${r.lineageMs.first} ms the first time, ${r.lineageMs.cached} ms cached`);
    for (const p of ['repo', 'history', 'lineage'] as const) {
      const b = r.browser[p]!;
      console.log(`browser, ${p} page to first screen: median ${b.medianMs} ms (first ${b.firstMs} ms) vs ${b.referenceMedianMs} ms (${b.ratio}x)`);
    }
    console.log(`  ${r.goals.browserUnder1s ? 'PASS' : 'FAIL'} < 1 s`);
    console.log(`page weight: ${(r.pageWeight.gzipBytes / 1024).toFixed(1)} KiB gzip, ${(r.pageWeight.brotliBytes / 1024).toFixed(1)} KiB brotli (${r.pageWeight.files} files)  ${r.goals.weightUnder300KB ? 'PASS' : 'FAIL'} < 300 KB`);
  }
} finally {
  await srv.stop();
  rmSync(dir, { recursive: true, force: true });
}

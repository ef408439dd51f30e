/**
 * Issue 9: /metrics (Prometheus text format, parsed here with a Prometheus
 * text parser) moves with the work done; /healthz and /readyz; --metrics-addr
 * on a listener of its own; `serve --config FILE` with precedence flags >
 * environment > file > defaults and clear errors for bad keys.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Oci, prng } from './helpers/oci.js';
import { BIN, cleanEnv, cliOk, runCli } from './helpers/cli.js';

interface Family {
  name: string;
  type: string;
  metrics: Array<{ value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string; sum?: string }>;
}
const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (text: string) => Family[];

let s: TestServer;
let dir: string;

async function scrape(url = `${s.url}/metrics`): Promise<Map<string, Family>> {
  const r = await fetch(url);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toContain('text/plain');
  return new Map(parsePrometheus(await r.text()).map((f) => [f.name, f]));
}

function value(m: Map<string, Family>, name: string, labels: Record<string, string> = {}): number {
  const f = m.get(name);
  if (!f) return 0;
  let total = 0;
  for (const x of f.metrics) {
    if (Object.entries(labels).every(([k, v]) => x.labels?.[k] === v)) total += Number(x.value ?? x.count ?? 0);
  }
  return total;
}

beforeAll(async () => {
  s = await startTestServer();
  dir = mkdtempSync(join(tmpdir(), 'snapyard-metrics-'));
});

afterAll(async () => {
  await s?.stop();
});

describe('metrics', () => {
  test('request counters by route name, durations, bytes, store gauges, delta, gc and verify move with the work', async () => {
    const before = await scrape();
    const oci = new Oci(s.url);
    const file = join(dir, 'img');
    writeFileSync(file, prng(3 * 1024 * 1024, 21));
    await cliOk(['push', 'metrics/img:v1', file, '--registry', s.url, '--cache', join(dir, 'c1')]);
    const d = await oci.pushBlob('metrics/raw', prng(200_000, 3));
    for (let i = 0; i < 3; i++) expect((await oci.req('GET', `/v2/metrics/raw/blobs/${d}`)).status).toBe(200);
    expect((await oci.req('GET', '/v2/metrics/raw/blobs/sha256:' + '0'.repeat(64))).status).toBe(404);
    await cliOk(['pull', 'metrics/img:v1', '-o', join(dir, 'out'), '--registry', s.url, '--cache', join(dir, 'c2')]);
    await cliOk(['gc', '--grace', '0s', '--registry', s.url]);
    await cliOk(['verify', '--registry', s.url]);
    await new Promise((r) => setTimeout(r, 1100)); // store figures are read at most once a second
    const after = await scrape();
    expect(value(after, 'snapyard_http_requests_total', { route: 'blob.get', method: 'GET', status: '200' }) - value(before, 'snapyard_http_requests_total', { route: 'blob.get', method: 'GET', status: '200' })).toBe(3);
    expect(value(after, 'snapyard_http_requests_total', { route: 'blob.get', method: 'GET', status: '404' })).toBe(1);
    expect(value(after, 'snapyard_http_requests_total', { route: 'push.commit' })).toBeGreaterThanOrEqual(1);
    expect(value(after, 'snapyard_http_requests_total', { route: 'delta.plan' })).toBeGreaterThanOrEqual(1);
    // Labels are route names from the table, never paths: the label set stays bounded.
    for (const x of after.get('snapyard_http_requests_total')!.metrics) expect(x.labels!.route).toMatch(/^[a-z.-]+$/);
    expect(after.get('snapyard_http_request_duration_seconds')!.type).toBe('HISTOGRAM');
    // (the parser keeps no labels of histogram series: read the count line itself)
    const raw = await (await fetch(`${s.url}/metrics`)).text();
    const count = /^snapyard_http_request_duration_seconds_count\{route="blob\.get",method="GET"\} (\d+)$/m.exec(raw);
    expect(Number(count?.[1])).toBeGreaterThanOrEqual(4);
    expect(value(after, 'snapyard_http_sent_bytes_total', { route: 'blob.get' }) - value(before, 'snapyard_http_sent_bytes_total', { route: 'blob.get' })).toBeGreaterThanOrEqual(3 * 200_000);
    expect(value(after, 'snapyard_http_received_bytes_total') - value(before, 'snapyard_http_received_bytes_total')).toBeGreaterThanOrEqual(200_000);
    expect(value(after, 'snapyard_blobs')).toBeGreaterThanOrEqual(value(before, 'snapyard_blobs') + 1);
    expect(value(after, 'snapyard_chunks')).toBeGreaterThan(0);
    expect(value(after, 'snapyard_logical_bytes')).toBeGreaterThanOrEqual(3 * 1024 * 1024); // (gc took the unreferenced raw blob)
    expect(value(after, 'snapyard_stored_bytes')).toBeGreaterThan(0);
    expect(value(after, 'snapyard_dedup_ratio')).toBeGreaterThan(0);
    expect(value(after, 'snapyard_delta_replaced_bytes_total')).toBeGreaterThanOrEqual(3 * 1024 * 1024);
    expect(value(after, 'snapyard_delta_sent_bytes_total')).toBeGreaterThan(0);
    expect(value(after, 'snapyard_gc_runs_total', { dry_run: 'false' })).toBe(1);
    expect(value(after, 'snapyard_verify_runs_total', { result: 'ok' })).toBe(1);
    expect(after.has('snapyard_sessions_open')).toBe(true);
    expect(after.has('snapyard_chunk_worker_queue')).toBe(true);
    expect(after.has('process_resident_memory_bytes')).toBe(true);
  }, 120_000);
});

describe('health', () => {
  test('/healthz answers 200; /readyz 200 with its checks, and 503 naming the reason when free disk is below the threshold', async () => {
    expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
    const r = await fetch(`${s.url}/readyz`);
    expect(r.status).toBe(200);
    const body = (await r.json()) as { status: string; checks: Record<string, { ok: boolean }> };
    expect(body.status).toBe('ready');
    expect(Object.keys(body.checks).sort()).toEqual(['data-dir', 'free-disk', 'metadata']);
    const picky = await startTestServer({ readiness: { minFreeBytes: Number.MAX_SAFE_INTEGER } });
    try {
      const n = await fetch(`${picky.url}/readyz`);
      expect(n.status).toBe(503);
      const nb = (await n.json()) as { status: string; checks: Record<string, { ok: boolean; detail: string }> };
      expect(nb.checks['free-disk']!.ok).toBe(false);
      expect(nb.checks['free-disk']!.detail).toMatch(/below the/);
      expect((await fetch(`${picky.url}/healthz`)).status).toBe(200);
    } finally {
      await picky.stop();
    }
  });
});

/** Starts `snapyard serve ARGS` and resolves with its first log line (the start line) and the child. */
function serveProc(args: string[], env: NodeJS.ProcessEnv): Promise<{ line: Record<string, unknown>; stop(): void }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('snapyard serving on'));
      if (line) resolve({ line: JSON.parse(line) as Record<string, unknown>, stop: () => child.kill('SIGTERM') });
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${err}`)));
  });
}

describe('serve --config and --metrics-addr', () => {
  test('flags > environment > config file > defaults; metrics on their own listener, not on the main port', async () => {
    const cfg = join(dir, 'snapyard.yaml');
    writeFileSync(cfg, `data: ${join(dir, 'from-file')}\nhost: 127.0.0.1\nport: 0\nidleTimeout: 30s\nmetricsAddr: 127.0.0.1:0\nanonymousPull: false\nmaxBlobSize: 2G\n`);
    const p = await serveProc(['--config', cfg, '--data', join(dir, 'from-flag')], cleanEnv({ SNAPYARD_HOST: '127.0.0.2' }));
    try {
      expect(p.line.data).toBe(join(dir, 'from-flag')); // the flag beats the file
      expect(p.line.host).toBe('127.0.0.2'); // the environment beats the file
      const port = p.line.port as number;
      const metricsUrl = p.line.metrics as string;
      expect(metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const m = await scrape(metricsUrl);
      expect(m.has('snapyard_http_requests_total')).toBe(true);
      expect((await fetch(`http://127.0.0.2:${port}/metrics`)).status).toBe(404);
      expect((await fetch(`http://127.0.0.2:${port}/v2/`)).status).toBe(200);
    } finally {
      p.stop();
    }
  });

  test('a bad key or value in the config file is a clear error naming it', async () => {
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'data: /tmp/x\nprot: 5000\n');
    const r = await runCli(['serve', '--config', bad]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^snapyard: INVALID_ARGUMENT: config file .*bad\.yaml: unknown key "prot"/);
    writeFileSync(bad, 'idleTimeout: soon\n');
    const r2 = await runCli(['serve', '--config', bad]);
    expect(r2.stderr).toMatch(/config file .*: idleTimeout "soon" is not a duration/);
    const r3 = await runCli(['serve', '--port', 'x']);
    expect(r3.code).not.toBe(0);
    expect(r3.stderr).toMatch(/port must be a whole number/);
    const r4 = await runCli(['serve', '--verify-reads', 'sha1']);
    expect(r4.code).toBe(2);
    expect(r4.stderr).toMatch(/^snapyard: INVALID_ARGUMENT: verifyReads must be one of digest, checksum, not "sha1"/);
  });
});

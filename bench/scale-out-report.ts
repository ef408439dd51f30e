/**
 * bench/scale-out.ts's figures: what it measured (Report), the issue's goals
 * checked against it, printed as a table (stdout) or one JSON object.
 */
import type { S3Counts } from './s3-counting-proxy.js';

export type Backend = 'local' | 's3';

export interface PushPullStep {
  step: string;
  backend: Backend;
  /** The work's time: the `seconds` the CLI reports (GET: first byte asked to last byte read). */
  seconds: number;
  /** The whole CLI process (node start-up included). */
  wallSeconds: number;
  wireUp: number;
  wireDown: number;
  chunks?: number;
  newChunks?: number;
  /** Image (push) or blob (GET) size. */
  size?: number;
  /** S3 backend: requests RGW received during the step. */
  s3?: S3Counts;
  /** S3 backend: PostgreSQL round trips (Sync + Query) during the step. */
  pgRoundTrips?: number;
  /** S3 backend: requests by route (repository, digests and ids taken out) and the PostgreSQL round trips made while each was in flight. */
  routes?: Record<string, { requests: number; pgRoundTrips: number }>;
  /** S3 backend: the statements PostgreSQL was sent most often during the step, with their counts. */
  pgStatements?: Record<string, number>;
}

export interface SpaceBack {
  backend: Backend;
  images: number;
  removed: string[];
  gcSeconds: number;
  chunksFreed: number;
  packsRewritten: number;
  packsDeleted: number;
  /** Pack files on disk / pack objects in the bucket prefix, after gc. */
  storedBytes: number;
  packs: number;
  /** Live chunk bytes (record headers included) verify read after gc. */
  liveBytes: number;
  verifyOk: boolean;
  /** One pack per writer: the largest pack the backend writes. */
  packAllowance: number;
  gcS3?: S3Counts;
}

export interface ReplicaRun {
  /** s3: the replicas; local: the local server alone, for reference. */
  backend: Backend;
  round: number;
  replicas: number;
  pulls: number;
  bytes: number;
  seconds: number;
  slowest: number;
  /** CPU seconds used during the figure: each server, the bench process (the round-robin proxy), the GETs' process, the whole machine (every process, every core). */
  cpu: { servers: number[]; proxy: number; client: number; machine: number };
  /** Share of the machine's CPU time (all cores) busy during the figure, 0..1. */
  machineBusy: number;
}

export interface Report {
  corpus: string;
  cli: string;
  pulls: number;
  steps: PushPullStep[];
  spaceBack: SpaceBack[];
  replicas: ReplicaRun[];
  /** Peak RSS (VmHWM) of each serve process, bytes. */
  rss: Record<string, number>;
}

interface Goal {
  figure: string;
  value: string;
  goal: string;
  pass: boolean | null;
}

const MB = 1e6;
const GB = 1e9;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** The issue's goals, checked. pass null: reported, no goal. */
export function goals(r: Report): Goal[] {
  const out: Goal[] = [];
  const get = (step: string, b: Backend) => r.steps.find((s) => s.step === step && s.backend === b)!;
  for (const step of ['push base-v1', 'overlay pull games-v2', 'push games-v2', 'GET base-v1 blob']) {
    const [l, s] = [get(step, 'local'), get(step, 's3')];
    if (!l || !s) continue;
    const ratio = s.seconds / l.seconds;
    const primary = step === 'push base-v1' || step === 'overlay pull games-v2';
    out.push({ figure: `${step}: time S3 / local`, value: `${s.seconds.toFixed(2)} / ${l.seconds.toFixed(2)} s = ${ratio.toFixed(2)}x`, goal: primary ? '<= 2x' : '-', pass: primary ? ratio <= 2 : null });
    const [wl, ws] = [l.wireUp + l.wireDown, s.wireUp + s.wireDown];
    const diff = Math.abs(ws - wl) / Math.max(wl, 1);
    out.push({ figure: `${step}: wire bytes S3 vs local`, value: `${(ws / MB).toFixed(3)} vs ${(wl / MB).toFixed(3)} MB (${(diff * 100).toFixed(2)}% apart)`, goal: primary ? 'same (< 1% apart)' : '-', pass: primary ? diff < 0.01 : null });
  }
  const push = get('push base-v1', 's3');
  if (push?.s3 && push.size) {
    out.push({ figure: 'S3 PUTs per GB pushed (push base-v1)', value: `${(push.s3.requests.PUT / (push.size / GB)).toFixed(1)} (${push.s3.requests.PUT} PUTs, ${(push.s3.bytesUp / MB).toFixed(1)} MB, image ${(push.size / MB).toFixed(1)} MB)`, goal: 'report', pass: null });
  }
  for (const step of ['overlay pull games-v2', 'GET base-v1 blob']) {
    const s = get(step, 's3');
    if (!s?.s3) continue;
    out.push({ figure: `S3 GETs per GB served (${step})`, value: `${(s.s3.requests.GET / (s.wireDown / GB)).toFixed(1)} (${s.s3.requests.GET} GETs, ${(s.s3.bytesDown / MB).toFixed(1)} MB read, ${(s.wireDown / MB).toFixed(1)} MB served)`, goal: 'report', pass: null });
  }
  const pull = get('overlay pull games-v2', 's3');
  if (pull?.pgRoundTrips !== undefined) out.push({ figure: 'PostgreSQL round trips, overlay pull games-v2', value: String(pull.pgRoundTrips), goal: 'report', pass: null });
  const trips = ['push base-v1', 'push games-v2'].map((st) => get(st, 's3')).filter((s) => s?.pgRoundTrips !== undefined);
  for (const s of trips) {
    out.push({ figure: `PostgreSQL round trips, ${s.step} (1 blob + config blob + manifest)`, value: `${s.pgRoundTrips} for ${s.chunks} chunks (${s.newChunks} new)`, goal: 'report', pass: null });
  }
  for (const s of trips.filter((x) => x.chunks && x.routes)) {
    // Batched lookups and commits (up to 4096 chunks a call) stay far below 0.05 a chunk; a round trip per chunk is >= 1.
    for (const [route, isCommit] of [['POST /snapyard/v1/R/_commit', true], ['POST /snapyard/v1/R/_missing', false]] as const) {
      const x = s.routes![route];
      if (!x) continue;
      const perChunk = x.pgRoundTrips / x.requests / s.chunks!;
      out.push({
        figure: `PostgreSQL round trips per ${isCommit ? 'blob commit (_commit)' : 'lookup of the index (_missing)'}, ${s.step}`,
        value: `${(x.pgRoundTrips / x.requests).toFixed(0)} for ${s.chunks} chunks = ${perChunk.toFixed(3)} a chunk`,
        goal: isCommit ? '< 0.05 a chunk (no round trip per chunk)' : 'report',
        pass: isCommit ? perChunk < 0.05 : null,
      });
    }
  }
  const rate = (k: number) => median(r.replicas.filter((x) => x.backend === 's3' && x.replicas === k).map((x) => x.bytes / x.seconds));
  if (r.replicas.some((x) => x.backend === 's3')) {
    out.push({ figure: `${r.pulls} concurrent full GETs of base-v1's blob: 2 replicas / 1`, value: `${(rate(2) / MB).toFixed(1)} / ${(rate(1) / MB).toFixed(1)} MB/s = ${(rate(2) / rate(1)).toFixed(2)}x`, goal: '>= 1.5x', pass: rate(2) / rate(1) >= 1.5 });
  }
  for (const sb of r.spaceBack) {
    const limit = 1.1 * sb.liveBytes + sb.packAllowance;
    out.push({ figure: `space back (${sb.backend}): stored / live after rm + gc --grace 0s`, value: `${(sb.storedBytes / MB).toFixed(1)} / ${(sb.liveBytes / MB).toFixed(1)} MB = ${(sb.storedBytes / sb.liveBytes).toFixed(3)}x (${sb.packs} packs; verify ok: ${sb.verifyOk})`, goal: `<= 1.1x live + one pack (${(limit / MB).toFixed(1)} MB)`, pass: sb.storedBytes <= limit && sb.verifyOk });
  }
  for (const [name, peak] of Object.entries(r.rss)) {
    out.push({ figure: `serve peak RSS (${name})`, value: `${(peak / MB).toFixed(0)} MB`, goal: '< 300 MB', pass: peak < 300 * MB });
  }
  return out;
}

export function printReport(r: Report, json: boolean): void {
  const g = goals(r);
  if (json) {
    console.log(JSON.stringify({ ...r, goals: g }));
    return;
  }
  console.log(`## bench/scale-out.ts (${r.corpus}; CLI from ${r.cli})\n`);
  console.log('| step | backend | seconds | wall s | wire up MB | wire down MB | S3 PUT/GET/other | S3 MB up/down | PG round trips |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const s of r.steps) {
    const q = s.s3?.requests;
    const other = q ? q.HEAD + q.LIST + q.DELETE + q.OTHER : 0;
    console.log(`| ${s.step} | ${s.backend} | ${s.seconds.toFixed(2)} | ${s.wallSeconds.toFixed(2)} | ${(s.wireUp / MB).toFixed(3)} | ${(s.wireDown / MB).toFixed(3)} | ${q ? `${q.PUT}/${q.GET}/${other}` : '-'} | ${s.s3 ? `${(s.s3.bytesUp / MB).toFixed(1)}/${(s.s3.bytesDown / MB).toFixed(1)}` : '-'} | ${s.pgRoundTrips ?? '-'} |`);
  }
  console.log('\n| concurrent GETs | servers | round | pulls | MB | seconds | MB/s | slowest pull s | CPU s: servers, proxy, client, whole machine | machine busy |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  for (const x of r.replicas) console.log(`| ${x.backend} | ${x.replicas} | ${x.round} | ${x.pulls} | ${(x.bytes / MB).toFixed(0)} | ${x.seconds.toFixed(2)} | ${(x.bytes / MB / x.seconds).toFixed(1)} | ${x.slowest.toFixed(2)} | ${x.cpu.servers.map((c) => c.toFixed(1)).join(' + ')}, ${x.cpu.proxy.toFixed(1)}, ${x.cpu.client.toFixed(1)}, ${x.cpu.machine.toFixed(1)} | ${(x.machineBusy * 100).toFixed(0)}% |`);
  for (const s of r.steps.filter((x) => x.pgStatements)) {
    console.log(`\nRequests to the S3 server during ${s.step}, and PostgreSQL round trips while they were in flight:`);
    for (const [route, x] of Object.entries(s.routes ?? {})) console.log(`  ${String(x.requests).padStart(6)} x ${route}: ${x.pgRoundTrips}`);
    console.log(`PostgreSQL statements most sent during ${s.step} (s3):`);
    for (const [q, k] of Object.entries(s.pgStatements!)) console.log(`  ${String(k).padStart(6)}  ${q}`);
  }
  console.log('\n| figure | measured | goal | |');
  console.log('|---|---|---|---|');
  for (const x of g) console.log(`| ${x.figure} | ${x.value} | ${x.goal} | ${x.pass === null ? '' : x.pass ? 'PASS' : 'FAIL'} |`);
  console.log(`\n${JSON.stringify({ goals: g.filter((x) => x.pass !== null).map((x) => ({ figure: x.figure, value: x.value, pass: x.pass })) })}`);
}

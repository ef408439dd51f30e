/**
 * Issue 4: online GC and verify on a realistic store.
 *
 *   npx tsx bench/gc-verify.ts CORPUS_DIR [--remove games-v1,games-v2] [--probes N]
 *
 * Pushes every *.qcow2 image of CORPUS_DIR with `snapyard push` (tag = file
 * name without "win98-" and ".qcow2", dots as dashes), deletes the manifests
 * of the --remove tags (plain OCI DELETE), then runs `gc --grace 0s` while a
 * probe keeps pulling (manifest GET + a 4 MiB ranged blob GET, one after the
 * other) and compares the probe's latency during gc with the same probe idle.
 * Then `verify`, against sha256 over the same stored bytes (the pack files)
 * in the same run. Needs `npm run build` first (the CLI runs dist/).
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createReadStream, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runGc, runVerify } from '../client/maintenance.js';
import { Registry } from '../client/registry.js';
import { BIN, MB, corpusImages, duBytes, packDirBytes, removeByDigest, rssOf, startServer, tagOf } from './lib.js';

const args = process.argv.slice(2);
const dir = args.find((a, i) => !a.startsWith('--') && !['--remove', '--probes'].includes(args[i - 1] ?? ''));
const opt = (k: string) => (args.includes(k) ? args[args.indexOf(k) + 1] : undefined);
if (!dir) {
  console.error('usage: npx tsx bench/gc-verify.ts CORPUS_DIR [--remove games-v1,games-v2] [--probes N]');
  process.exit(2);
}
const REMOVE = (opt('--remove') ?? 'games-v1,games-v2').split(',');
const PROBES = Number(opt('--probes') ?? 40);
const REPO = 'win98';

const work = mkdtempSync(join(tmpdir(), 'snapyard-gcv-'));
const server = await startServer(join(work, 'data'));
const log = (s: string) => process.stderr.write(`${s}\n`);
try {
  const images = corpusImages(dir);
  let logical = 0;
  for (const f of images) {
    const out = execFileSync(process.execPath, [BIN, 'push', `${REPO}:${tagOf(f)}`, join(dir, f), '--json', '--registry', server.url, '--cache', join(work, 'cache')], { encoding: 'utf8' });
    const r = JSON.parse(out) as { size: number; seconds: number };
    logical += r.size;
    log(`pushed ${tagOf(f)} (${(r.size / MB).toFixed(1)} MB) in ${r.seconds.toFixed(1)} s`);
  }
  const before = duBytes(join(work, 'data'));
  // The probe pulls something that stays: base-v1.
  const probeDigest = (await fetch(`${server.url}/v2/${REPO}/manifests/base-v1`)).headers.get('docker-content-digest')!;
  const manifest = (await (await fetch(`${server.url}/v2/${REPO}/manifests/base-v1`)).json()) as { layers: Array<{ digest: string; size: number }> };
  const layer = manifest.layers[0]!;
  const probe = async (): Promise<number> => {
    const t0 = performance.now();
    await (await fetch(`${server.url}/v2/${REPO}/manifests/${probeDigest}`)).arrayBuffer();
    const at = Math.floor(Math.random() * (layer.size - 4 * 1024 * 1024));
    const r = await fetch(`${server.url}/v2/${REPO}/blobs/${layer.digest}`, { headers: { Range: `bytes=${at}-${at + 4 * 1024 * 1024 - 1}` } });
    if ((await r.arrayBuffer()).byteLength !== 4 * 1024 * 1024) throw new Error('short probe read');
    return performance.now() - t0;
  };
  const idle: number[] = [];
  for (let i = 0; i < PROBES; i++) idle.push(await probe());
  for (const [tag, d] of await removeByDigest(server.url, REPO, REMOVE)) log(`removed ${tag} (${d})`);
  const during: number[] = [];
  let gcDone = false;
  const prober = (async () => {
    while (!gcDone) during.push(await probe());
  })();
  const rss0 = rssOf(server.pid).peak;
  const admin = new Registry(server.url, { connections: 1 });
  const gc = await runGc(admin, { graceSeconds: 0 });
  gcDone = true;
  await prober;
  const after = duBytes(join(work, 'data'));
  // verify, and sha256 over the same stored bytes (every pack file), same run.
  const verify = await runVerify(admin, {});
  await admin.close();
  const packs = join(work, 'data', 'store', 'packs');
  const t0 = performance.now();
  let hashed = 0;
  for (const f of readdirSync(packs)) {
    const h = createHash('sha256');
    for await (const piece of createReadStream(join(packs, f), { highWaterMark: 4 << 20 })) {
      h.update(piece as Buffer);
      hashed += (piece as Buffer).byteLength;
    }
    h.digest();
  }
  const shaSeconds = (performance.now() - t0) / 1000;
  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
  const fmt = (xs: number[]) => `median ${pct(xs, 0.5).toFixed(0)} ms, p90 ${pct(xs, 0.9).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms (${xs.length} probes)`;
  console.log(`## bench/gc-verify.ts (${dir})\n`);
  console.log(`${images.length} images pushed, ${(logical / MB).toFixed(1)} MB logical; data dir ${(before / MB).toFixed(1)} MB.`);
  console.log(`Removed ${REMOVE.join(', ')}; gc --grace 0s: ${gc.seconds.toFixed(2)} s, ${gc.chunks} chunks (${(gc.storedBytes / MB).toFixed(1)} MB stored) freed, ${gc.packsRewritten} packs rewritten, ${gc.packsDeleted} deleted, ${(gc.packBytesFreed / MB).toFixed(1)} MB freed on disk; data dir ${(before / MB).toFixed(1)} → ${(after / MB).toFixed(1)} MB.`);
  console.log(`Probe (manifest GET + 4 MiB ranged blob GET of base-v1): idle ${fmt(idle)}; during gc ${fmt(during)}.`);
  console.log(`verify: ${verify.chunks} chunks, ${(verify.storedBytes / MB).toFixed(1)} MB stored in ${verify.seconds.toFixed(2)} s = ${(verify.storedBytes / MB / verify.seconds).toFixed(0)} MB/s (ok: ${verify.ok}); sha256 over the pack files (${(hashed / MB).toFixed(1)} MB) ${(hashed / MB / shaSeconds).toFixed(0)} MB/s: ratio ${((verify.storedBytes / verify.seconds) / (hashed / shaSeconds)).toFixed(2)}x.`);
  // Space back (issue 11): pack bytes on disk against the live chunk bytes verify read.
  const { packs: packCount, bytes: packBytes } = packDirBytes(packs);
  console.log(`Packs on disk after gc: ${(packBytes / MB).toFixed(1)} MB for ${(verify.storedBytes / MB).toFixed(1)} MB of live chunks = ${(packBytes / verify.storedBytes).toFixed(3)}x (${packCount} packs).`);
  console.log(`Server peak RSS ${(rssOf(server.pid).peak / MB).toFixed(0)} MB (before gc ${(rss0 / MB).toFixed(0)} MB).`);
} finally {
  await server.stop();
  rmSync(work, { recursive: true, force: true });
}

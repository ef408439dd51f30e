/**
 * Stored bytes after pushing images, against the same images' zstd -3 sizes and
 * a casync store holding them all, in the same run.
 *
 *   npx tsx bench/store-size.ts [--skopeo] IMAGE...
 *
 * With --skopeo the images are pushed with `skopeo copy` from an OCI layout
 * (qcow2 artifacts), otherwise with monolithic HTTP uploads. Stored bytes = the
 * server's data directory (chunks, indexes and SQLite metadata).
 */
import { mkdtempSync, rmSync, statSync, createReadStream } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { request } from 'undici';
import { MB, duBytes, need, startServer } from './lib.js';
import { addQcow2Artifact, fileDigest } from './oci-layout.js';

const args = process.argv.slice(2);
const viaSkopeo = args.includes('--skopeo');
const images = args.filter((a) => !a.startsWith('--'));
if (images.length === 0) {
  console.error('usage: npx tsx bench/store-size.ts [--skopeo] IMAGE...');
  process.exit(2);
}
need('zstd', 'zstd');
need('casync', 'casync');
if (viaSkopeo) need('skopeo', 'skopeo');

const tmp = mkdtempSync(join(tmpdir(), 'snapyard-size-'));
const data = join(tmp, 'data');
const srv = await startServer(data);
const host = srv.url.replace('http://', '');
const rows: Array<{ image: string; size: number; zstd3: number; storeAfter: number }> = [];
let zstdSum = 0;
for (const img of images) {
  const tag = basename(img).replace(/\.qcow2$/, '').replace(/[^a-zA-Z0-9_.-]/g, '-');
  if (viaSkopeo) {
    const layout = join(tmp, 'layout');
    await addQcow2Artifact(layout, tag, img);
    execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:${tag}`, `docker://${host}/bench/images:${tag}`], { stdio: 'inherit' });
  } else {
    const { digest, size } = await fileDigest(img);
    const r = await request(`${srv.url}/v2/bench/images/blobs/uploads/?digest=${digest}`, {
      method: 'POST',
      body: createReadStream(img, { highWaterMark: 1 << 20 }),
      headers: { 'content-length': String(size) },
    });
    await r.body.text();
    if (r.statusCode !== 201) throw new Error(`push ${img}: ${r.statusCode}`);
  }
  const zstd3 = Number(execFileSync('sh', ['-c', `zstd -3 -T0 -q -c "$1" | wc -c`, 'sh', img]).toString().trim());
  zstdSum += zstd3;
  rows.push({ image: basename(img), size: statSync(img).size, zstd3, storeAfter: duBytes(data) });
}
await srv.stop();
const stored = duBytes(data);
const castr = join(tmp, 'castr');
for (const img of images) {
  execFileSync('casync', ['make', '--compression=zstd', '--chunk-size=16384:65536:262144', `--store=${castr}`, join(tmp, `${basename(img)}.caibx`), img], { stdio: ['ignore', 'ignore', 'inherit'] });
}
const casync = duBytes(castr);
console.log(`pushed with ${viaSkopeo ? 'skopeo' : 'HTTP monolithic uploads'}:`);
let prev = 0;
for (const r of rows) {
  console.log(`  ${r.image.padEnd(36)} ${(r.size / MB).toFixed(1).padStart(8)} MB file  zstd -3 ${(r.zstd3 / MB).toFixed(1).padStart(7)} MB  store +${((r.storeAfter - prev) / MB).toFixed(1)} MB`);
  prev = r.storeAfter;
}
console.log(`  snapyard stored bytes:   ${(stored / MB).toFixed(1)} MB (data dir, metadata included)`);
console.log(`  sum of zstd -3 sizes:    ${(zstdSum / MB).toFixed(1)} MB  -> ratio ${(stored / zstdSum).toFixed(3)}`);
console.log(`  casync store (same set): ${(casync / MB).toFixed(1)} MB  -> snapyard/casync ${(stored / casync).toFixed(3)}`);
console.log(JSON.stringify({ viaSkopeo, images: rows, stored, zstdSum, casync }));
rmSync(tmp, { recursive: true, force: true });

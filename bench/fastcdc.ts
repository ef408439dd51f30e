/**
 * FastCDC throughput vs sha256 on the same in-memory buffer.
 *
 *   npx tsx bench/fastcdc.ts [FILE]
 *
 * Default input: 256 MiB of deterministic pseudo-random bytes (AES-128-CTR
 * keystream, zero key/IV), generated in-process. With FILE, the file is read
 * into memory. Each figure is the best of 5 runs. Not a vitest test.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DEFAULT_FASTCDC, chunkBuffer, chunkStream } from '../storage/blobs/fastcdc.js';

const RUNS = 5;
const MB = 1e6;

function pseudoRandom(bytes: number): Buffer {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16), Buffer.alloc(16));
  const out = Buffer.alloc(bytes);
  const step = 16 << 20;
  for (let off = 0; off < bytes; off += step) {
    const n = Math.min(step, bytes - off);
    cipher.update(Buffer.alloc(n)).copy(out, off);
  }
  return out;
}

async function bestOf<T>(fn: () => T | Promise<T>): Promise<{ seconds: number; result: T }> {
  let best = Infinity;
  let result!: T;
  for (let i = 0; i < RUNS; i++) {
    const t0 = process.hrtime.bigint();
    result = await fn();
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    if (s < best) best = s;
  }
  return { seconds: best, result };
}

async function* pieces(buf: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function main(): Promise<void> {
  const file = process.argv[2];
  const buf = file !== undefined ? readFileSync(file) : pseudoRandom(256 << 20);
  const input = file ?? 'pseudo-random (aes-128-ctr)';
  const params = DEFAULT_FASTCDC;

  const cdc = await bestOf(() => chunkBuffer(buf, params));
  const stream = await bestOf(async () => {
    let n = 0;
    for await (const c of chunkStream(pieces(buf, 1 << 20), params)) n += c.length > 0 ? 1 : 0;
    return n;
  });
  const sha = await bestOf(() => createHash('sha256').update(buf).digest('hex'));

  const mbps = (s: number) => buf.length / MB / s;
  const chunks = cdc.result.length;
  const results = {
    input,
    bytes: buf.length,
    params,
    runs: RUNS,
    chunks,
    meanChunk: chunks > 0 ? Math.round(buf.length / chunks) : 0,
    fastcdcMBps: Math.round(mbps(cdc.seconds)),
    chunkStreamMBps: Math.round(mbps(stream.seconds)),
    sha256MBps: Math.round(mbps(sha.seconds)),
    ratio: Number((mbps(cdc.seconds) / mbps(sha.seconds)).toFixed(2)),
    node: process.version,
  };
  if (stream.result !== chunks) throw new Error(`chunkStream produced ${stream.result} chunks, chunkBuffer ${chunks}`);

  console.log(`input:        ${input}, ${(buf.length / 2 ** 20).toFixed(1)} MiB, ${chunks} chunks (mean ${results.meanChunk} B)`);
  console.log(`FastCDC:      ${results.fastcdcMBps} MB/s  (chunkBuffer, best of ${RUNS})`);
  console.log(`chunkStream:  ${results.chunkStreamMBps} MB/s  (1 MiB pieces, chunk data copied out)`);
  console.log(`sha256:       ${results.sha256MBps} MB/s  (node:crypto)`);
  console.log(`ratio:        FastCDC / sha256 = ${results.ratio}`);
  console.log(JSON.stringify(results));
}

await main();

/**
 * Hostile-input fuzzing of the qcow2 reader and index builder (issue 8):
 * thousands of mutants of small valid images (v2, v3, 512-byte clusters,
 * extended L2, zlib and zstd compressed clusters, an internal snapshot, an
 * overlay), with mutations aimed at header fields, header extensions, L1
 * and L2 tables, compressed descriptors, refcount tables and blocks, the
 * snapshot table, shared L2 tables and truncation.
 *
 * For every mutant: open + layout walk + index build either succeed or throw
 * a SnapyardError QCOW2_INVALID (nothing else: no TypeError, RangeError,
 * zlib/zstd error or crash), within 5 s, and memory stays bounded. An
 * accepted mutant must be self-consistent: its index decodes (every
 * invariant checked) and describes the file, and its data chunks are exactly
 * the guest data of its data extents. A sample of accepted mutants is read
 * whole and compared with `qemu-img convert -O raw` (backing disabled), when
 * qemu reads them too.
 *
 * Deterministic (fixed fast-check seed); the counts are printed.
 */
import { describe, expect, test, beforeAll } from 'vitest';
import fc from 'fast-check';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { tempDirs } from './helpers/tmp.js';
import { startTestServer } from './helpers/server.js';
import { runTool } from './helpers/qcow2-fixtures.js';
import { makeSeedImages, mutate, mutationArb, regionsOf, type SeedImage } from './helpers/qcow2-mutate.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import { planLayout } from '../storage/qcow2/layout-plan.js';
import { buildQcow2Index } from '../storage/qcow2/index-builder.js';
import { decodeBlobIndex } from '../storage/blobs/blob-index.js';
import { EXTENT_DATA, Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { isSnapyardError } from '../storage/errors.js';
import { digestFromRaw, sha256 as sha256Of, type Digest } from '../storage/digest.js';

const tmp = tempDirs('snapyard-fuzz-qcow2-');
/** FUZZ_RUNS / FUZZ_SEED explore further locally; CI runs the fixed default. */
const RUNS_PER_SEED = Number(process.env.FUZZ_RUNS ?? 400);
const FC_SEED = Number(process.env.FUZZ_SEED ?? 82024);
const QEMU_SAMPLES_PER_SEED = 10;
const SERVER_MUTANTS_PER_SEED = 3;
const CASE_BOUND_MS = 5_000;
const MAX_QEMU_VIRTUAL = 64 * 1024 * 1024;
const PLACEHOLDER = `sha256:${'0'.repeat(64)}` as Digest;

let dir: string;
let seeds: SeedImage[] = [];

beforeAll(async () => {
  dir = tmp();
  for (const s of await makeSeedImages(dir)) {
    const bytes = readFileSync(s.path);
    seeds.push({ ...s, bytes, regions: regionsOf(bytes) });
  }
});

/** A sink that keeps every chunk (mutants are small). */
function keepingSink() {
  const chunks = new Map<string, Buffer>();
  return {
    chunks,
    add: async (raw: Uint8Array) => {
      const d = digestFromRaw(createHash('sha256').update(raw).digest());
      chunks.set(d, Buffer.from(raw));
      return { digest: d };
    },
  };
}

interface Outcome { accepted: boolean; ms: number; virtualSize: number }

/** Everything the reader and builder do with a mutant; throws on any property violation. */
async function exercise(path: string, bytes: Buffer): Promise<Outcome> {
  writeFileSync(path, bytes);
  const t0 = performance.now();
  let img: Qcow2Image | undefined;
  try {
    img = Qcow2Image.open(path);
    const plan = planLayout(img);
    const sink = keepingSink();
    const index = await buildQcow2Index(path, sink, { blobDigest: PLACEHOLDER, plan });
    // Self-consistency: the index decodes (all invariants), describes this file, and its data stream is the guest data.
    const decoded = decodeBlobIndex(index.encode());
    expect(decoded).toBeInstanceOf(Qcow2Index);
    expect(decoded.size).toBe(bytes.byteLength);
    const stream: Buffer[] = [];
    for (let i = 0; i < index.data.count; i++) stream.push(sink.chunks.get(digestFromRaw(index.data.rawDigestAt(i)))!);
    const data = Buffer.concat(stream);
    let at = 0;
    const L = index.layout;
    for (let x = 0; x < L.extentKinds.length; x++) {
      if (L.extentKinds[x] !== EXTENT_DATA) continue;
      const want = img.readGuest(L.extentOffsets[x]!, L.extentLengths[x]!, undefined);
      expect(data.subarray(at, at + want.byteLength).equals(want)).toBe(true);
      at += want.byteLength;
    }
    expect(at).toBe(data.byteLength);
    return { accepted: true, ms: performance.now() - t0, virtualSize: img.virtualSize };
  } catch (e) {
    if (!isSnapyardError(e, 'QCOW2_INVALID')) throw new Error(`mutant failed with something other than QCOW2_INVALID: ${(e as Error)?.stack ?? String(e)}`);
    return { accepted: false, ms: performance.now() - t0, virtualSize: 0 };
  } finally {
    img?.close();
  }
}

/** The whole guest disk as the reader sees it (unallocated as zeros), vs qemu with the backing file disabled. */
async function compareWithQemu(path: string): Promise<'same' | 'qemu-refused'> {
  const raw = `${path}.raw`;
  try {
    await runTool('qemu-img', ['convert', '-U', '-O', 'raw', `json:${JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: path } })}`, raw]);
  } catch {
    return 'qemu-refused';
  }
  const theirs = readFileSync(raw);
  rmSync(raw, { force: true });
  const img = Qcow2Image.open(path);
  try {
    // qemu sizes a disk in whole 512-byte sectors (a mutated size's odd tail is not part of its disk).
    const qemuSize = Math.floor(img.virtualSize / 512) * 512;
    expect(theirs.byteLength).toBe(qemuSize);
    const ours = img.readGuest(0, qemuSize, undefined);
    expect(ours.equals(theirs)).toBe(true);
  } finally {
    img.close();
  }
  return 'same';
}

describe('qcow2 reader and index builder under mutated images', () => {
  test('only QCOW2_INVALID or a consistent read; no hang over 5 s; memory bounded; accepted samples match qemu', async () => {
    const totals = { cases: 0, accepted: 0, refused: 0, qemuSame: 0, qemuRefused: 0, slowestMs: 0 };
    const rss0 = process.memoryUsage().rss;
    let peakRss = rss0;
    const t0 = Date.now();
    for (const seed of seeds) {
      // The unmutated seed is accepted and matches qemu.
      const clean = await exercise(join(dir, `clean-${seed.name}.qcow2`), seed.bytes);
      expect(clean.accepted, seed.name).toBe(true);
      let sampled = 0;
      const path = join(dir, `mutant-${seed.name}.qcow2`);
      await fc.assert(
        fc.asyncProperty(fc.array(mutationArb(seed), { minLength: 1, maxLength: 4 }), async (ms) => {
          const bytes = mutate(seed, ms);
          const r = await exercise(path, bytes);
          totals.cases++;
          totals.slowestMs = Math.max(totals.slowestMs, r.ms);
          peakRss = Math.max(peakRss, process.memoryUsage().rss);
          expect(r.ms, `case took ${r.ms} ms`).toBeLessThan(CASE_BOUND_MS);
          if (!r.accepted) {
            totals.refused++;
            return;
          }
          totals.accepted++;
          if (sampled < QEMU_SAMPLES_PER_SEED && r.virtualSize <= MAX_QEMU_VIRTUAL && !bytes.equals(seed.bytes)) {
            sampled++;
            if ((await compareWithQemu(path)) === 'same') totals.qemuSame++;
            else totals.qemuRefused++;
          }
        }),
        { numRuns: RUNS_PER_SEED, seed: FC_SEED + seed.name.length, endOnFailure: true },
      );
    }
    const growthMiB = (peakRss - rss0) / 2 ** 20;
    console.log(`fuzz-qcow2: ${totals.cases} mutants of ${seeds.length} seeds in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${totals.accepted} accepted, ${totals.refused} refused (QCOW2_INVALID); ${totals.qemuSame} accepted samples identical to qemu-img convert, ${totals.qemuRefused} refused by qemu; slowest case ${totals.slowestMs.toFixed(0)} ms; peak RSS growth ${growthMiB.toFixed(0)} MiB`);
    expect(totals.cases).toBe(seeds.length * RUNS_PER_SEED);
    expect(totals.accepted).toBeGreaterThan(0);
    expect(totals.refused).toBeGreaterThan(0);
    expect(totals.qemuSame).toBeGreaterThan(0);
    expect(growthMiB).toBeLessThan(512);
  });
});

describe('mutated qcow2 images through the OCI upload path of a real server', () => {
  test('every one is accepted (201) and reads back byte-exact, qcow2-aware or byte-chunked', async () => {
    const server = await startTestServer();
    try {
      const uploads: Buffer[] = [];
      for (const seed of seeds) {
        uploads.push(seed.bytes);
        const ms = fc.sample(fc.array(mutationArb(seed), { minLength: 1, maxLength: 4 }), { numRuns: SERVER_MUTANTS_PER_SEED, seed: FC_SEED + 1 });
        for (const m of ms) uploads.push(mutate(seed, m));
      }
      const kinds = { qcow2: 0, bytes: 0 };
      const t0 = Date.now();
      // Four at a time: the layout walks queue for the store's worker threads.
      for (let i = 0; i < uploads.length; i += 4) {
        await Promise.all(uploads.slice(i, i + 4).map(async (bytes, k) => {
          const repo = `fuzz/q${i + k}`;
          const d = sha256Of(bytes);
          const put = await fetch(`${server.url}/v2/${repo}/blobs/uploads/?digest=${d}`, { method: 'POST', body: bytes, signal: AbortSignal.timeout(CASE_BOUND_MS * 2) });
          expect(put.status, await put.clone().text()).toBe(201);
          const get = await fetch(`${server.url}/v2/${repo}/blobs/${d}`);
          expect(Buffer.from(await get.arrayBuffer()).equals(bytes)).toBe(true);
          const index = await server.store.blobs.index((await server.store.blobs.stat(repo, d))!);
          kinds[index.kind === 1 ? 'qcow2' : 'bytes']++;
        }));
      }
      console.log(`fuzz-qcow2 (server): ${uploads.length} uploads in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${kinds.qcow2} stored qcow2-aware, ${kinds.bytes} byte-chunked, all byte-exact`);
      expect(kinds.qcow2).toBeGreaterThanOrEqual(seeds.length);
    } finally {
      await server.stop();
    }
  });
});

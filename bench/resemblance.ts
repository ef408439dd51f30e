/**
 * Resemblance-dictionary compression of the chunks a client lacks.
 *
 *   npx tsx bench/resemblance.ts HAVE.qcow2 [HAVE2.qcow2 ...] --target TARGET.qcow2
 *       [--bits N] [--min-votes N] [--levels 3,6,9,19] [--tops 1,2,3] [--no-baselines] [--chain]
 *
 * Every image is chunked like `snapyard inspect` does (FastCDC default params
 * over the guest bytes of its data and compressed extents, in guest order, as
 * one stream; sha256 per chunk). Held chunks = distinct chunks of the HAVE
 * images; missing = distinct chunks of TARGET not held. Each held chunk is
 * sketched (timed) into a ResemblanceIndex; only (image, stream offset,
 * length) is kept per held chunk, and dictionary chunks are re-read from
 * their image when needed, so memory stays bounded.
 *
 * Reported for the missing set: count and raw bytes; each chunk compressed
 * alone (zstd 1, 3, 19); all of them concatenated as one zstd stream (3, 19);
 * each chunk against the concatenation of its top 1, 2, 3 similar held chunks
 * (best one last, nearest the data) at each level, with the compression time.
 * Per-chunk sizes are min(zstd, raw) (a sender ships raw bytes when zstd does
 * not help) and exclude framing. The level-3 top-3 payloads are decompressed
 * and compared. With --chain, each missing chunk joins the index once
 * compressed (a client that receives them in order holds it from then on),
 * so later missing chunks may use earlier ones as dictionary. Not a vitest test.
 */
import { createHash } from 'node:crypto';
import binding from 'zstd-napi/binding.js';
import { chunkStream, DEFAULT_FASTCDC } from '../storage/blobs/fastcdc.js';
import { Qcow2Image } from '../storage/qcow2/reader.js';
import { ANCHOR_BITS, encodeSketch, ResemblanceIndex, sketch } from '../storage/delta/resemblance.js';
import { compressWithDict, decompressWithDict } from '../storage/delta/dict-codec.js';

const MB = 1e6;
const PIECE = 4 << 20;

interface Segment { stream: number; guest: number; length: number }
interface Source { path: string; img: Qcow2Image; segs: Segment[] }
interface ChunkRef { src: number; offset: number; length: number }

function parseArgs(argv: string[]) {
  const have: string[] = [];
  let target = '';
  let bits = ANCHOR_BITS;
  let minVotes = 1;
  let levels = [3, 6, 9, 19];
  let tops = [1, 2, 3];
  let baselines = true;
  let chain = false;
  const list = (s: string | undefined) => (s ?? '').split(',').map(Number);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--target') target = argv[++i] ?? '';
    else if (a === '--bits') bits = Number(argv[++i]);
    else if (a === '--min-votes') minVotes = Number(argv[++i]);
    else if (a === '--levels') levels = list(argv[++i]);
    else if (a === '--tops') tops = list(argv[++i]);
    else if (a === '--no-baselines') baselines = false;
    else if (a === '--chain') chain = true;
    else have.push(a);
  }
  if (have.length === 0 || target === '') {
    console.error('usage: npx tsx bench/resemblance.ts HAVE.qcow2 [HAVE2.qcow2 ...] --target TARGET.qcow2');
    process.exit(2);
  }
  return { have, target, bits, minVotes, levels, tops, baselines, chain };
}

function openSource(path: string): Source {
  const img = Qcow2Image.open(path);
  const segs: Segment[] = [];
  let stream = 0;
  for (const e of img.extents()) {
    if (e.kind !== 'data' && e.kind !== 'compressed') continue;
    segs.push({ stream, guest: e.guestOffset, length: e.length });
    stream += e.length;
  }
  return { path, img, segs };
}

/** The guest stream of a source, in pieces (one buffer reused, as cli/inspect.ts does). */
async function* streamOf(s: Source): AsyncGenerator<Uint8Array> {
  const buf = Buffer.allocUnsafe(PIECE);
  for (const g of s.segs) {
    for (let off = 0; off < g.length; off += PIECE) {
      const piece = buf.subarray(0, Math.min(PIECE, g.length - off));
      s.img.readGuestInto(piece, g.guest + off);
      yield piece;
    }
  }
}

/** Fills `into` with the source's stream bytes at `offset`. */
function readStream(s: Source, offset: number, into: Buffer): void {
  let lo = 0;
  let hi = s.segs.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (s.segs[mid]!.stream <= offset) lo = mid;
    else hi = mid - 1;
  }
  let done = 0;
  for (let i = lo; done < into.length; i++) {
    const g = s.segs[i]!;
    const from = offset + done - g.stream;
    const n = Math.min(g.length - from, into.length - done);
    s.img.readGuestInto(into.subarray(done, done + n), g.guest + from);
    done += n;
  }
}

const now = () => performance.now();
const fmt = (bytes: number) => `${(bytes / MB).toFixed(2)} MB`;

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  const sources: Source[] = [];
  const held: ChunkRef[] = [];
  const heldDigests = new Set<string>();
  const index = new ResemblanceIndex();
  let sketchMs = 0;
  let sketchBytes = 0;
  let sketchEncoded = 0;
  let emptySketches = 0;
  const t0 = now();
  for (const path of opt.have) {
    const src = sources.push(openSource(path)) - 1;
    for await (const c of chunkStream(streamOf(sources[src]!), DEFAULT_FASTCDC, { copy: false })) {
      const digest = createHash('sha256').update(c.data).digest('base64');
      if (heldDigests.has(digest)) continue;
      heldDigests.add(digest);
      const t = now();
      const s = sketch(c.data, opt.bits);
      sketchMs += now() - t;
      sketchBytes += c.length;
      sketchEncoded += encodeSketch(s, opt.bits).length;
      if (s.length === 0) emptySketches++;
      index.add(held.length, s);
      held.push({ src, offset: c.offset, length: c.length });
    }
  }
  const tgt = sources.push(openSource(opt.target)) - 1;
  const missing: Array<ChunkRef & { sketch: Uint32Array }> = [];
  const seen = new Set<string>();
  let targetChunks = 0;
  for await (const c of chunkStream(streamOf(sources[tgt]!), DEFAULT_FASTCDC, { copy: false })) {
    targetChunks++;
    const digest = createHash('sha256').update(c.data).digest('base64');
    if (heldDigests.has(digest) || seen.has(digest)) continue;
    seen.add(digest);
    missing.push({ src: tgt, offset: c.offset, length: c.length, sketch: sketch(c.data, opt.bits) });
  }
  const rawBytes = missing.reduce((n, m) => n + m.length, 0);
  console.log(`have: ${opt.have.join(' ')}\ntarget: ${opt.target}`);
  console.log(`held chunks ${held.length} (${fmt(sketchBytes)}), target chunks ${targetChunks}, chunking took ${((now() - t0) / 1000).toFixed(1)} s`);
  console.log(`sketch: bits ${opt.bits}, ${(sketchBytes / MB / (sketchMs / 1000)).toFixed(0)} MB/s, avg ${(sketchEncoded / held.length).toFixed(0)} B encoded, ` +
    `${emptySketches} empty; index ${fmt(index.memoryBytes)}`);
  console.log(`missing: ${missing.length} chunks, ${fmt(rawBytes)} raw`);

  const rows: Array<[string, number, number]> = [];
  const read = (r: ChunkRef) => {
    const b = Buffer.allocUnsafe(r.length);
    readStream(sources[r.src]!, r.offset, b);
    return b;
  };
  const cctx = new binding.CCtx();
  if (opt.baselines) {
    for (const level of [1, 3, 19]) {
      let total = 0;
      let ms = 0;
      for (const m of missing) {
        const raw = read(m);
        const out = Buffer.allocUnsafe(binding.compressBound(raw.length));
        const t = now();
        total += Math.min(raw.length, cctx.compress(out, raw, level));
        ms += now() - t;
      }
      rows.push([`alone, level ${level}`, total, ms]);
    }
    const all = Buffer.concat(missing.map(read));
    for (const level of [3, 19]) {
      const out = Buffer.allocUnsafe(binding.compressBound(all.length));
      const t = now();
      const n = cctx.compress(out, all, level);
      rows.push([`one stream, level ${level}`, n, now() - t]);
    }
  }

  const topMax = Math.max(...opt.tops);
  const sizes = new Map<string, [number, number]>();
  let lookupMs = 0;
  let matched = 0;
  let dictBytes = 0;
  let decodeMs = 0;
  for (const m of missing) {
    const raw = read(m);
    const t = now();
    const ids = index.similar(m.sketch, topMax, opt.minVotes);
    lookupMs += now() - t;
    if (ids.length > 0) matched++;
    const dicts = ids.map((id) => read(held[id]!));
    for (const top of opt.tops) {
      const dict = Buffer.concat(dicts.slice(0, top).reverse()); // best match last
      if (top === topMax) dictBytes += dict.length;
      for (const level of opt.levels) {
        const tc = now();
        const payload = compressWithDict(raw, dict, level);
        const ms = now() - tc;
        const key = `top ${top}, level ${level}`;
        const acc = sizes.get(key) ?? [0, 0];
        sizes.set(key, [acc[0] + Math.min(payload.length, raw.length), acc[1] + ms]);
        if (top === topMax && level === 3) {
          const td = now();
          const back = decompressWithDict(payload, dict, raw.length);
          decodeMs += now() - td;
          if (!back.equals(raw)) throw new Error(`round trip failed for chunk at ${m.offset}`);
        }
      }
    }
    if (opt.chain) {
      index.add(held.length, m.sketch);
      held.push(m);
    }
  }
  for (const [key, [n, ms]] of sizes) rows.push([`resemblance ${key}`, n, ms]);
  console.log(`resemblance: min votes ${opt.minVotes}${opt.chain ? ', chained' : ''}, ${matched}/${missing.length} chunks matched, lookups ${lookupMs.toFixed(0)} ms, ` +
    `top-${topMax} dictionaries ${fmt(dictBytes)}, level-3 top-${topMax} decode ${decodeMs.toFixed(0)} ms (round trip verified)`);
  console.log('\n| method | bytes | % of raw | compress time |\n|---|---|---|---|');
  for (const [name, n, ms] of rows) {
    console.log(`| ${name} | ${fmt(n)} | ${((100 * n) / rawBytes).toFixed(1)}% | ${(ms / 1000).toFixed(2)} s |`);
  }
  for (const s of sources) s.img.close();
}

await main();

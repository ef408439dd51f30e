/**
 * The qcow2 chunk index (kind 1) built from real images: byte-exact rebuild
 * through the recipe (whole file and ranges), the guest view matching qemu's
 * view of the disk, host-layout independence, the compact (prefix) form, and
 * decoding hostile indexes.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, test } from 'vitest';
import { decodeBlobIndex } from '../storage/blobs/blob-index.js';
import { digestFromRaw, sha256, sha256Raw } from '../storage/digest.js';
import { isSnapyardError } from '../storage/errors.js';
import { buildQcow2Index } from '../storage/qcow2/index-builder.js';
import { Qcow2Index } from '../storage/blobs/qcow2-index.js';
import { makeBaseImage, makeCompressed, makeShuffled, makeVariant, makeWithInternalSnapshot, runTool } from './helpers/qcow2-fixtures.js';
import { tempDirs } from './helpers/tmp.js';

const newDir = tempDirs('snapyard-q2index-');

/** A sink that keeps every chunk in memory (small fixtures only). */
function memorySink() {
  const chunks = new Map<string, Buffer>();
  return {
    chunks,
    add: async (raw: Uint8Array) => {
      const d = digestFromRaw(sha256Raw(raw));
      chunks.set(d, Buffer.from(raw));
      return { digest: d };
    },
  };
}

async function build(path: string) {
  const sink = memorySink();
  const bytes = readFileSync(path);
  const index = await buildQcow2Index(path, sink, { blobDigest: sha256(bytes) });
  return { index, sink, bytes };
}

/** Bytes [a, b) of the file, rebuilt from the index's pieces and the chunks. */
function rebuild(index: Qcow2Index, chunks: Map<string, Buffer>, a = 0, b = index.size): Buffer {
  const parts: Buffer[] = [];
  for (const p of index.blobPieces(a, b)) parts.push(chunks.get(p.list.digestAt(p.i))!.subarray(p.from, p.to));
  return Buffer.concat(parts);
}

let dir: string;
let base: string;
let variant: string;

beforeAll(async () => {
  dir = newDir();
  base = await makeBaseImage(dir);
  variant = await makeVariant(dir, base, 'variant');
}, 120_000);

describe('qcow2 index', () => {
  test('rebuilds the exact file, whole and in ranges; the guest view is what qemu reads', async () => {
    for (const path of [base, variant, await makeCompressed(dir, variant), await makeWithInternalSnapshot(dir, variant)]) {
      const { index, sink, bytes } = await build(path);
      expect(rebuild(index, sink.chunks).equals(bytes), path).toBe(true);
      for (const [a, b] of [[0, 1], [100, 70_000], [bytes.length - 5000, bytes.length], [65_536 * 3 + 7, 65_536 * 9 + 3]] as const) {
        expect(rebuild(index, sink.chunks, a, b).equals(bytes.subarray(a, b)), `${path} ${a}-${b}`).toBe(true);
      }
      // The guest view: data pieces at their guest offsets equal `qemu-img convert -O raw`.
      const raw = `${path}.raw`;
      await runTool('qemu-img', ['convert', '-O', 'raw', path, raw]);
      const disk = readFileSync(raw);
      for (const p of index.guestPieces(0, index.layout.virtualSize)) {
        if (p.stream < 0) {
          expect(disk.subarray(p.guestOffset, p.guestOffset + p.length).every((x) => x === 0), `${path} zeros at ${p.guestOffset}`).toBe(true);
          continue;
        }
        const parts: Buffer[] = [];
        for (const q of index.data.pieces(p.stream, p.stream + p.length)) parts.push(sink.chunks.get(q.list.digestAt(q.i))!.subarray(q.from, q.to));
        expect(Buffer.concat(parts).equals(disk.subarray(p.guestOffset, p.guestOffset + p.length)), `${path} data at ${p.guestOffset}`).toBe(true);
      }
    }
  });

  test('a shuffled host layout gives the same data chunks; only the recipe differs', async () => {
    const a = await build(variant);
    const b = await build(await makeShuffled(dir, variant));
    expect(b.index.data.digests.equals(a.index.data.digests)).toBe(true);
    expect(b.bytes.equals(a.bytes)).toBe(false);
    expect(rebuild(b.index, b.sink.chunks).equals(b.bytes)).toBe(true);
  });

  test('round-trips through its stored form and the compact form (digest prefixes resolved)', async () => {
    const { index } = await build(variant);
    const stored = index.encode();
    const back = decodeBlobIndex(stored);
    expect(back.encode().equals(stored)).toBe(true);
    const all = new Map<string, Buffer>();
    for (const l of index.lists()) for (let i = 0; i < l.count; i++) all.set(l.rawDigestAt(i).subarray(0, 8).toString('hex'), Buffer.from(l.rawDigestAt(i)));
    const compact = index.encode(8);
    expect(compact.byteLength).toBeLessThan(stored.byteLength / 2);
    const expanded = decodeBlobIndex(compact, 8, (prefix) => all.get(prefix.toString('hex'))!);
    expect(expanded.encode().equals(stored)).toBe(true);
    expect(sha256(expanded.encode())).toBe(sha256(stored));
  });

  test('hostile indexes are INDEX_INVALID, never a crash or a huge allocation', async () => {
    const { index } = await build(base);
    const good = index.encode();
    const cases: Buffer[] = [good.subarray(0, good.length - 1), Buffer.concat([good, Buffer.alloc(20)])];
    const huge = Buffer.from(good);
    huge.writeUInt32LE(0xffffffff, 88); // extent count
    cases.push(huge);
    const wrongOp = Buffer.from(good);
    wrongOp.writeBigUInt64LE(BigInt(good.length), wrongOp.length - 16); // last op's length
    cases.push(wrongOp);
    const badKind = Buffer.from(good);
    badKind.writeUInt32LE(7, badKind.length - 20);
    cases.push(badKind);
    for (const c of cases) {
      let err: unknown;
      try {
        decodeBlobIndex(c);
      } catch (e) {
        err = e;
      }
      expect(isSnapyardError(err, 'INDEX_INVALID'), String(err)).toBe(true);
    }
    expect(createHash('sha256').update(good).digest('hex')).toHaveLength(64);
  });
});

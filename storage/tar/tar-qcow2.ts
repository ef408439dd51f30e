/**
 * A qcow2 image wrapped in a tar layer (how seed-style container images carry
 * their disk: an uncompressed tar holding the qcow2, after at most a few
 * directory entries, links, pax or GNU long-name records and small files,
 * as `COPY snapshot.qcow2 /emulator-snapshot/` makes). The
 * member's guest view dedups like a bare qcow2; the tar header before it and
 * the padding and trailer after it are residue (storage/blobs/qcow2-index.ts): the
 * member's index is shifted into the whole blob's, with one residue op in
 * front and one behind, so the blob is still rebuilt byte-exact.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { ChunkIndexBuilder } from '../blobs/chunk-index.js';
import type { Digest } from '../digest.js';
import { chunkStream, type FastCDCParams } from '../blobs/fastcdc.js';
import { hasQcow2Magic } from '../qcow2/format.js';
import type { ChunkSink } from '../qcow2/index-builder.js';
import { OP_RESIDUE, Qcow2Index } from '../blobs/qcow2-index.js';

export const TAR_BLOCK = 512;

/** Bytes to peek at the start of a blob to tell a tar-wrapped qcow2: the qcow2 member's header must lie within them. */
export const TAR_QCOW2_PEEK = 64 * 1024;

/** Tar entries looked at before the qcow2 member, at most. */
const MAX_ENTRIES = 64;

export interface TarMember {
  /** Where the member's data starts in the blob. */
  offset: number;
  size: number;
}

function octal(h: Buffer, at: number, len: number): number | null {
  if ((h[at]! & 0x80) !== 0) {
    // GNU base-256 (members of 8 GiB and more): big-endian after the marker bit.
    let v = h[at]! & 0x7f;
    for (let i = at + 1; i < at + len; i++) v = v * 256 + h[i]!;
    return Number.isSafeInteger(v) ? v : null;
  }
  const s = h.toString('latin1', at, at + len).replace(/[\0 ]+$/, '').trim();
  return /^[0-7]+$/.test(s) ? parseInt(s, 8) : null;
}

function validHeader(h: Buffer): boolean {
  if (h.toString('latin1', 257, 262) !== 'ustar') return false;
  let sum = 0;
  for (let i = 0; i < TAR_BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  return octal(h, 148, 8) === sum;
}

/** The `size` record of a pax extended header (it overrides the next member's size field), or null. */
function paxSize(data: Buffer): number | null {
  let at = 0;
  let size: number | null = null;
  while (at < data.length) {
    const sp = data.indexOf(0x20, at);
    if (sp < 0) break;
    const len = Number(data.toString('latin1', at, sp));
    if (!Number.isSafeInteger(len) || len <= sp - at || at + len > data.length) return null;
    const rec = data.toString('utf8', sp + 1, at + len - 1);
    if (rec.startsWith('size=')) size = /^\d+$/.test(rec.slice(5)) ? Number(rec.slice(5)) : null;
    at += len;
  }
  return size !== null && Number.isSafeInteger(size) ? size : null;
}

const REGULAR = new Set([0x30, 0, 0x37]);
/** Entries with no data of their own (hard and symbolic links, devices, directories, FIFOs). */
const NO_DATA = new Set([0x31, 0x32, 0x33, 0x34, 0x35, 0x36]);
/** pax extended ('x'), pax global ('g'), GNU long name ('L') and long link ('K') records. */
const META = new Set([0x78, 0x67, 0x4c, 0x4b]);

/**
 * The first regular member of a tar stream that starts with the qcow2 magic,
 * when every header up to and including its own lies in `head` (the entries
 * before it: directories, links, pax/GNU records and other files). Null when
 * a header is invalid or of another type, or there is no such member in reach.
 */
export function tarQcow2MemberIn(head: Uint8Array): TarMember | null {
  const buf = Buffer.from(head.buffer, head.byteOffset, head.byteLength);
  let at = 0;
  let nextSize: number | null = null;
  for (let n = 0; n < MAX_ENTRIES && at + TAR_BLOCK <= buf.length; n++) {
    const h = buf.subarray(at, at + TAR_BLOCK);
    if (!validHeader(h)) return null;
    const type = h[156]!;
    let size = octal(h, 124, 12);
    if (size === null) return null;
    const data = at + TAR_BLOCK;
    if (REGULAR.has(type)) {
      if (nextSize !== null) size = nextSize;
      nextSize = null;
      if (size >= 4 && data + 4 <= buf.length && hasQcow2Magic(buf.subarray(data))) return { offset: data, size };
    } else if (META.has(type)) {
      if (data + size > buf.length) return null;
      if (type === 0x78) nextSize = paxSize(buf.subarray(data, data + size));
    } else if (NO_DATA.has(type)) {
      nextSize = null;
    } else return null;
    at = data + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
  }
  return null;
}

/** A tar stream holding a qcow2 member within reach of its start (tarQcow2MemberIn). */
export function isTarWrappedQcow2(head: Uint8Array): boolean {
  return tarQcow2MemberIn(head) !== null;
}

/** FastCDC chunks of the file range [start, end) into the sink and the builder. */
async function chunkRange(path: string, start: number, end: number, params: FastCDCParams, sink: ChunkSink, into: ChunkIndexBuilder): Promise<void> {
  if (end <= start) return;
  for await (const c of chunkStream(createReadStream(path, { start, end: end - 1 }), params)) into.push((await sink.add(c.data)).digest, c.length);
}

/**
 * The index of the whole tar blob at `path` (`size` bytes, digest
 * `blobDigest`) from the index of its member: the same guest view and data
 * chunks; residue = tar header + the member's residue + padding and trailer.
 */
export async function wrapMemberIndex(member: Qcow2Index, m: TarMember, path: string, size: number, blobDigest: Digest, sink: ChunkSink): Promise<Qcow2Index> {
  const params = member.params;
  const after = size - (m.offset + m.size);
  const residue = new ChunkIndexBuilder(params);
  await chunkRange(path, 0, m.offset, params, sink, residue);
  for (let i = 0; i < member.residue.count; i++) residue.push(member.residue.digestAt(i), member.residue.lengths[i]!);
  await chunkRange(path, m.offset + m.size, size, params, sink, residue);
  const L = member.layout;
  const k = L.opKinds.length;
  const extra = (m.offset > 0 ? 1 : 0) + (after > 0 ? 1 : 0);
  const opKinds = new Uint8Array(k + extra);
  const opLengths = new Float64Array(k + extra);
  const opSources = new Float64Array(k + extra);
  let o = 0;
  if (m.offset > 0) {
    opKinds[o] = OP_RESIDUE;
    opLengths[o++] = m.offset;
  }
  opKinds.set(L.opKinds, o);
  opLengths.set(L.opLengths, o);
  opSources.set(L.opSources, o);
  o += k;
  if (after > 0) {
    opKinds[o] = OP_RESIDUE;
    opLengths[o] = after;
  }
  return new Qcow2Index(blobDigest, size, params, { ...L, opKinds, opLengths, opSources }, member.data, residue.buildList());
}

/** The qcow2 member of a spooled tar-wrapped blob (null when it is not one, or the member runs past the end). */
export async function tarQcow2Member(path: string, size: number): Promise<TarMember | null> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(TAR_QCOW2_PEEK);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const m = tarQcow2MemberIn(head.subarray(0, bytesRead));
    return m !== null && m.offset + m.size <= size ? m : null;
  } finally {
    await fh.close();
  }
}

/** Copies the member's bytes out to `to` (the qcow2 reader wants a file of its own). */
export async function copyMember(from: string, m: TarMember, to: string): Promise<void> {
  await pipeline(createReadStream(from, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 4 * 1024 * 1024 }), createWriteStream(to, { flags: 'wx' }));
}

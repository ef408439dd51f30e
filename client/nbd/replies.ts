/**
 * The bodies of NBD_CMD_READ and NBD_CMD_BLOCK_STATUS answers, from a block
 * source. A structured read of a range with zero runs (from the source's
 * blockStatus) answers them as NBD_REPLY_TYPE_OFFSET_HOLE chunks, 12 bytes
 * instead of the zeros, and reads only the data runs; every read completes
 * before a byte of the reply is returned, so an error is one error chunk,
 * never a half-sent reply.
 */
import { SnapyardError } from '../../storage/errors.js';
import { chunkHeader, REPLY_FLAG_DONE, REPLY_TYPE, simpleReply, u32, u64, type Request } from './protocol.js';
import { MAX_STATUS_EXTENTS, type BlockSource, type StatusExtent } from './source.js';

/** base:allocation runs for a request: the source's (at most `one` run, never past the range), or one data run when it has none. */
export async function status(source: BlockSource, offset: number, length: number, one: boolean): Promise<StatusExtent[]> {
  const runs = source.blockStatus ? await source.blockStatus(offset, length) : [{ length, zero: false }];
  let total = 0;
  const out: StatusExtent[] = [];
  for (const r of runs) {
    // Never more than asked, never an empty run (a source bug must not reach the client).
    const len = Math.min(r.length, length - total);
    if (!(len > 0)) break;
    out.push({ length: len, zero: r.zero });
    total += len;
    if (out.length >= (one ? 1 : MAX_STATUS_EXTENTS) || total >= length) break;
  }
  if (out.length === 0) throw new SnapyardError('INTERNAL', `block status of ${offset} +${length} returned no run`);
  return out;
}

async function readExact(source: BlockSource, offset: number, length: number): Promise<Buffer> {
  const data = await source.read(offset, length);
  if (data.byteLength !== length) throw new SnapyardError('INTERNAL', `source returned ${data.byteLength} bytes for a read of ${length}`);
  return data;
}

/** The buffers of a successful read reply (written together by the caller); `data`: those the source returned (source.release() once written). */
export async function readReply(source: BlockSource, req: Request, structured: boolean): Promise<{ parts: Buffer[]; data: Buffer[] }> {
  if (!structured) {
    const d = await readExact(source, req.offset, req.length);
    return { parts: [simpleReply(req.handle, 0), d], data: [d] };
  }
  const runs = source.blockStatus ? await status(source, req.offset, req.length, false) : [];
  const covered = runs.reduce((n, r) => n + r.length, 0);
  if (covered < req.length) runs.push({ length: req.length - covered, zero: false }); // the rest: read it
  // Adjacent runs of a kind are one piece: a data piece is one read, a zero piece one hole.
  const pieces: Array<{ offset: number; length: number; zero: boolean }> = [];
  let at = req.offset;
  for (const r of runs) {
    const last = pieces.at(-1);
    if (last && last.zero === r.zero) last.length += r.length;
    else pieces.push({ offset: at, length: r.length, zero: r.zero });
    at += r.length;
  }
  // All reads settle before the reply is built (Promise.all: a failing one never goes unhandled).
  const data = await Promise.all(pieces.map((p) => (p.zero ? undefined : readExact(source, p.offset, p.length))));
  const out: Buffer[] = [];
  const read: Buffer[] = [];
  pieces.forEach((p, i) => {
    const flags = i === pieces.length - 1 ? REPLY_FLAG_DONE : 0;
    const d = data[i];
    if (d) {
      out.push(chunkHeader(req.handle, flags, REPLY_TYPE.OFFSET_DATA, 8 + p.length), u64(p.offset), d);
      read.push(d);
    }
    else out.push(chunkHeader(req.handle, flags, REPLY_TYPE.OFFSET_HOLE, 12), u64(p.offset), u32(p.length));
  });
  return { parts: out, data: read };
}

import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { chunkStream, FastCDC, type FastCDCParams } from '../storage/blobs/fastcdc.js';

/** `snapyard chunk FILE`: the FastCDC chunks of a local file. */
export async function chunkFile(file: string, params: FastCDCParams, json: boolean, out: NodeJS.WritableStream = process.stdout): Promise<void> {
  new FastCDC(params); // validates the parameters before reading anything
  let n = 0;
  let total = 0;
  const unique = new Map<string, number>();
  for await (const c of chunkStream(createReadStream(file, { highWaterMark: 1 << 20 }), params)) {
    const digest = `sha256:${createHash('sha256').update(c.data).digest('hex')}`;
    n++;
    total += c.length;
    unique.set(digest, c.length);
    out.write(json ? `${JSON.stringify({ offset: c.offset, length: c.length, digest })}\n` : `${c.offset}\t${c.length}\t${digest}\n`);
  }
  if (!json) {
    let uniqueBytes = 0;
    for (const l of unique.values()) uniqueBytes += l;
    out.write(`# ${n} chunks, ${total} bytes; ${unique.size} unique chunks, ${uniqueBytes} unique bytes\n`);
  }
}

/** The reference for GET throughput: node:http streaming a plain file (one `Range: bytes=A-B` honoured). Prints its port over IPC. */
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';

const file = process.argv[2]!;
const size = statSync(file).size;
const srv = createServer((req, res) => {
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
  if (m) {
    const start = Number(m[1]);
    const end = Math.min(Number(m[2]), size - 1);
    res.writeHead(206, { 'Content-Length': String(end - start + 1), 'Content-Range': `bytes ${start}-${end}/${size}`, 'Content-Type': 'application/octet-stream' });
    createReadStream(file, { start, end, highWaterMark: 1 << 20 }).pipe(res);
    return;
  }
  res.writeHead(200, { 'Content-Length': String(size), 'Content-Type': 'application/octet-stream' });
  createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res);
});
srv.listen(0, '127.0.0.1', () => process.send!((srv.address() as { port: number }).port));

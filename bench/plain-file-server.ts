/** The reference for GET throughput: node:http streaming a plain file. Prints its port over IPC. */
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';

const file = process.argv[2]!;
const size = statSync(file).size;
const srv = createServer((_req, res) => {
  res.writeHead(200, { 'Content-Length': String(size), 'Content-Type': 'application/octet-stream' });
  createReadStream(file, { highWaterMark: 1 << 20 }).pipe(res);
});
srv.listen(0, '127.0.0.1', () => process.send!((srv.address() as { port: number }).port));

/**
 * A process that writes chunks to a RemoteChunkStore and stops before
 * flushing, for test/remote-chunk-store.test.ts to kill -9:
 *
 *   node --import tsx test/helpers/remote-store-child.ts SPOOL_DIR CHUNKS SEED
 *
 * The site comes from REMOTE_S3 (s3:// URL, credentials in the AWS_* variables)
 * and REMOTE_PG (PostgreSQL URL). Prints one JSON line (the digests added and
 * the spool files) once every chunk is in its segment file, then waits.
 */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { openPostgresChunkCatalog } from '../../storage/chunks/postgres-chunk-catalog.js';
import { RemoteChunkStore } from '../../storage/chunks/remote-chunk-store.js';
import { S3PackDriver } from '../../storage/chunks/s3-pack-driver.js';
import { randomBytes } from './qcow2-fixtures.js';

const [spoolDir, chunks, seed] = process.argv.slice(2);
const store = new RemoteChunkStore({
  driver: new S3PackDriver({ location: process.env.REMOTE_S3! }),
  catalog: await openPostgresChunkCatalog(process.env.REMOTE_PG!, { poolSize: 2 }),
  spoolDir: spoolDir!,
});
const w = store.writer();
const digests: string[] = [];
for (let i = 0; i < Number(chunks); i++) digests.push((await w.add(randomBytes(Number(seed) + i, 50_000))).digest);
await w.finish();
// The spool writes its segments on libuv's threads (up to 8 MiB appended and not yet written): wait until the
// chunks are in the file, as a writer killed later than this would leave them (at most 10 s).
const spooled = () => readdirSync(spoolDir!).reduce((n, f) => n + statSync(join(spoolDir!, f)).size, 0);
for (let i = 0; i < 200 && spooled() < Number(chunks) * 50_000; i++) await new Promise((r) => setTimeout(r, 50));
process.stdout.write(`${JSON.stringify({ digests, spool: readdirSync(spoolDir!) })}\n`);
setInterval(() => {}, 60_000);

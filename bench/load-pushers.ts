/**
 * The pushers of bench/load.ts, in a process of their own (as build jobs
 * are): chunking and hashing the pushed files must not stall the event loop
 * that times the other clients' requests.
 *
 *   npx tsx bench/load-pushers.ts URL SECONDS PUSHERS SEED_FILE WORK_DIR ROUND0 [USER:PASS]
 *
 * Prints `ready` once loaded, starts when its stdin says `go` (or ends), and
 * then prints one JSON object: {samples: [{ms, ok}], errors: {message: count}}.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from '../client/registry.js';
import { push } from '../client/push.js';
import { parseRef } from '../client/ref.js';

const [url, secs, n, seedFile, work, round0, creds] = process.argv.slice(2);
const seed = readFileSync(seedFile!).subarray(0, 4 << 20);
// Loaded: the timed segment starts when the bench says so (its start-up is not load).
process.stdout.write('ready\n');
await new Promise<void>((resolve) => {
  process.stdin.once('data', () => resolve());
  process.stdin.once('end', () => resolve());
});
const deadline = performance.now() + Number(secs) * 1000;
const samples: Array<{ ms: number; ok: boolean }> = [];
const errors: Record<string, number> = {};
const c = creds ? { creds: { username: creds.split(':')[0]!, password: creds.slice(creds.indexOf(':') + 1) } } : {};

async function pusher(i: number): Promise<void> {
  const reg = new Registry(url!, { connections: 2, ...c });
  const file = join(work!, `push-${i}.img`);
  try {
    for (let round = Number(round0); performance.now() < deadline; round++) {
      const buf = Buffer.from(seed);
      buf.fill((i * 31 + round) & 0xff, (round * 65536) % buf.length, ((round * 65536) % buf.length) + 65536);
      writeFileSync(file, buf);
      const t0 = performance.now();
      try {
        await push(parseRef(`load/win98:push-${i}-${round}`), file, { registry: reg, cache: null });
        samples.push({ ms: performance.now() - t0, ok: true });
      } catch (e) {
        samples.push({ ms: performance.now() - t0, ok: false });
        const k = String((e as Error).message).slice(0, 160);
        errors[k] = (errors[k] ?? 0) + 1;
      }
    }
  } finally {
    await reg.close();
  }
}

await Promise.all(Array.from({ length: Number(n) }, (_, i) => pusher(i)));
process.stdout.write(`${JSON.stringify({ samples, errors })}\n`);
process.exit(0);

/**
 * N concurrent full GETs of one URL, each on a connection of its own, bodies
 * read and discarded: the load of bench/scale-out.ts's replica figure, run as
 * a process of its own so the bench's proxies do not share its event loop.
 *
 *   npx tsx bench/concurrent-gets.ts URL N EXPECTED_BYTES
 *
 * Prints one JSON object: { bytes, seconds (first request to last byte), each: seconds per GET, cpuSeconds: this process's }.
 */
import { Agent, request } from 'undici';

const [url, n, expected] = process.argv.slice(2);
if (!url || !n || !expected) {
  console.error('usage: concurrent-gets.ts URL N EXPECTED_BYTES');
  process.exit(2);
}

async function one(): Promise<{ bytes: number; seconds: number }> {
  const agent = new Agent({ connections: 1 });
  const t0 = performance.now();
  try {
    const r = await request(url!, { dispatcher: agent });
    if (r.statusCode !== 200) throw new Error(`GET ${url}: HTTP ${r.statusCode}`);
    let bytes = 0;
    for await (const piece of r.body) bytes += (piece as Buffer).length;
    if (bytes !== Number(expected)) throw new Error(`GET ${url}: ${bytes} bytes, expected ${expected}`);
    return { bytes, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await agent.close();
  }
}

const t0 = performance.now();
const all = await Promise.all(Array.from({ length: Number(n) }, () => one()));
const seconds = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage();
console.log(JSON.stringify({ bytes: all.reduce((a, b) => a + b.bytes, 0), seconds, each: all.map((x) => +x.seconds.toFixed(3)), cpuSeconds: (cpu.user + cpu.system) / 1e6 }));

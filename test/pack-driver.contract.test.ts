/**
 * One contract, every PackDriver (issue 11): the same cases on a local
 * directory and on a real S3 endpoint (Ceph RGW from scripts/services/, see
 * test/helpers/services.ts). Then what only S3 has: requests that fail
 * (refused port, a server that never answers, wrong credentials, dropped
 * connections) end in typed errors after bounded retries.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { isSnapyardError, type ErrorCode } from '../storage/errors.js';
import type { PackDriver, PackDriverStats, PackFacts } from '../storage/chunks/pack-driver.js';
import { PackFileCache } from '../storage/chunks/pack-file-cache.js';
import { LocalPackDriver } from '../storage/chunks/local-pack-driver.js';
import { parseS3Url, S3PackDriver, type S3PackDriverOptions } from '../storage/chunks/s3-pack-driver.js';
import { testS3 } from './helpers/services.js';
import { tempDirs } from './helpers/tmp.js';

const newDir = tempDirs('snapyard-packdriver-');
const files = newDir();
let fileNo = 0;

/** A local file of `size` random bytes. */
function packFile(size: number): { path: string; bytes: Buffer } {
  const bytes = randomBytes(size);
  const path = join(files, `src-${fileNo++}`);
  writeFileSync(path, bytes);
  return { path, bytes };
}

async function codeOf(p: Promise<unknown>): Promise<ErrorCode | 'resolved' | string> {
  try {
    await p;
    return 'resolved';
  } catch (e) {
    return isSnapyardError(e) ? e.code : `untyped: ${String(e)}`;
  }
}

async function listAll(d: PackDriver): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const p of d.list()) out.set(p.name, p.size);
  return out;
}

type Tuning = Pick<S3PackDriverOptions, 'concurrency' | 'deleteBatch' | 'listPageSize'>;

interface Kind {
  kind: 'local' | 's3' | 's3 + local pack cache' | 's3 + local pack cache keeping every read';
  make(t?: Tuning): Promise<PackDriver>;
}

const opened: PackDriver[] = [];
let prefixNo = 0;

const kinds: Kind[] = [
  { kind: 'local', make: async () => new LocalPackDriver({ dir: join(newDir(), 'packs'), openFiles: 4 }) },
  {
    kind: 's3',
    make: async (t = {}) => {
      const s3 = await testS3();
      const prefix = `contract-${process.pid}-${prefixNo++}-${randomBytes(3).toString('hex')}`;
      return new S3PackDriver({ location: s3.withPrefix(prefix), credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, ...t });
    },
  },
  {
    // The local copies of what it put (pack-file-cache.ts) must answer as the bucket does.
    kind: 's3 + local pack cache',
    make: async (t = {}) => {
      const s3 = await testS3();
      const prefix = `contract-${process.pid}-${prefixNo++}-${randomBytes(3).toString('hex')}`;
      const inner = new S3PackDriver({ location: s3.withPrefix(prefix), credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, ...t });
      return new PackFileCache(inner, join(newDir(), 'pack-cache'));
    },
  },
  {
    // Every read asked to be kept (ReadHint.keep: ranges of the bucket's packs kept on the local disk) must answer as the bucket does too.
    kind: 's3 + local pack cache keeping every read',
    make: async (t = {}) => {
      const s3 = await testS3();
      const prefix = `contract-${process.pid}-${prefixNo++}-${randomBytes(3).toString('hex')}`;
      const inner = new S3PackDriver({ location: s3.withPrefix(prefix), credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey }, ...t });
      return new KeepingEveryRead(new PackFileCache(inner, join(newDir(), 'pack-cache'), 0));
    },
  },
];

/** A pack cache asked to keep every read (no whole packs: every read goes through the kept ranges). */
class KeepingEveryRead implements PackDriver {
  readonly location: string;
  constructor(readonly cache: PackFileCache) {
    this.location = cache.location;
  }
  put(name: string, file: string, known?: PackFacts): Promise<void> {
    return this.cache.put(name, file, known);
  }
  get(name: string, offset: number, length: number): Promise<Buffer> {
    return this.cache.get(name, offset, length, { keep: true });
  }
  delete(names: string[]): Promise<void> {
    return this.cache.delete(names);
  }
  list(): AsyncIterable<{ name: string; size: number }> {
    return this.cache.list();
  }
  stats(): PackDriverStats {
    return this.cache.stats();
  }
  close(): Promise<void> {
    return this.cache.close();
  }
}

async function open(k: Kind, t?: Tuning): Promise<PackDriver> {
  const d = await k.make(t);
  opened.push(d);
  return d;
}

afterEach(async () => {
  // Leave nothing behind (RGW's memstore keeps objects in RAM).
  for (const d of opened.splice(0)) {
    const names = [...(await listAll(d)).keys()];
    await d.delete(names);
    await d.close();
  }
});

describe.each(kinds)('PackDriver contract: $kind', (k) => {
  test('put then get: ranges are byte-exact, at the start, inside, at the very end, empty, and the whole pack', async () => {
    const d = await open(k);
    const { path, bytes } = packFile(100_003);
    await d.put('p-range', path);
    const n = bytes.length;
    for (const [offset, length] of [[0, 1], [0, 4096], [12_345, 54_321], [n - 10, 10], [n - 1, 1], [0, n], [500, 0], [n, 0]] as const) {
      const got = await d.get('p-range', offset, length);
      expect(got.length, `${offset}+${length}`).toBe(length);
      expect(got.equals(bytes.subarray(offset, offset + length)), `${offset}+${length}`).toBe(true);
    }
  });

  test('a range past the end is RANGE_INVALID, wherever it starts; bad arguments are INVALID_ARGUMENT', async () => {
    const d = await open(k);
    const { path } = packFile(5000);
    await d.put('p-end', path);
    expect(await codeOf(d.get('p-end', 4990, 11))).toBe('RANGE_INVALID');
    expect(await codeOf(d.get('p-end', 0, 5001))).toBe('RANGE_INVALID');
    expect(await codeOf(d.get('p-end', 5000, 1))).toBe('RANGE_INVALID');
    expect(await codeOf(d.get('p-end', 9000, 10))).toBe('RANGE_INVALID');
    expect(await codeOf(d.get('p-end', 5001, 0))).toBe('RANGE_INVALID');
    expect(await codeOf(d.get('p-end', -1, 10))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(d.get('p-end', 0, 1.5))).toBe('INVALID_ARGUMENT');
    for (const bad of ['', '../x', 'a/b', '.hidden', 'x'.repeat(201)]) {
      expect(await codeOf(d.put(bad, path)), bad).toBe('INVALID_ARGUMENT');
      expect(await codeOf(d.get(bad, 0, 1)), bad).toBe('INVALID_ARGUMENT');
    }
  });

  test('put of an existing name is CONFLICT and the old content stays', async () => {
    const d = await open(k);
    const first = packFile(3000);
    const second = packFile(7000);
    await d.put('p-once', first.path);
    expect(await codeOf(d.put('p-once', second.path))).toBe('CONFLICT');
    expect(await codeOf(d.put('p-once', first.path))).toBe('CONFLICT');
    expect((await d.get('p-once', 0, 3000)).equals(first.bytes)).toBe(true);
    expect(await listAll(d)).toEqual(new Map([['p-once', 3000]]));
  });

  test('get of a missing pack is NOT_FOUND (an empty range too)', async () => {
    const d = await open(k);
    expect(await codeOf(d.get('p-missing', 0, 10))).toBe('NOT_FOUND');
    expect(await codeOf(d.get('p-missing', 0, 0))).toBe('NOT_FOUND');
  });

  test('delete removes the packs named, missing ones are no error, and a deleted name can be put again', async () => {
    const d = await open(k);
    const a = packFile(100);
    const b = packFile(200);
    const c = packFile(300);
    await d.put('p-a', a.path);
    await d.put('p-b', b.path);
    await d.put('p-c', c.path);
    await d.delete(['p-a', 'p-never', 'p-b']);
    await d.delete([]);
    expect(await listAll(d)).toEqual(new Map([['p-c', 300]]));
    expect(await codeOf(d.get('p-a', 0, 1))).toBe('NOT_FOUND');
    await d.put('p-a', b.path);
    expect((await d.get('p-a', 0, 200)).equals(b.bytes)).toBe(true);
  });

  test('list: every pack with its size, over several pages; delete in batches', async () => {
    const d = await open(k, { listPageSize: 7, deleteBatch: 10 });
    const want = new Map<string, number>();
    const srcs = Array.from({ length: 23 }, (_, i) => packFile(10 + i));
    await Promise.all(srcs.map((s, i) => {
      const name = `p-list-${String(i).padStart(2, '0')}`;
      want.set(name, 10 + i);
      return d.put(name, s.path);
    }));
    const before = d.stats();
    expect(await listAll(d)).toEqual(want);
    const listed = d.stats().lists - before.lists;
    expect(listed).toBe(k.kind !== 'local' ? 4 : 1); // 7 + 7 + 7 + 2
    await d.delete([...want.keys()]);
    expect(d.stats().deletes - before.deletes).toBe(k.kind !== 'local' ? 3 : 23); // S3: requests of 10, 10, 3; local: files
    expect(await listAll(d)).toEqual(new Map());
  });

  test('stats count requests and payload bytes', async () => {
    const d = await open(k);
    expect(d.stats()).toEqual({ puts: 0, gets: 0, deletes: 0, lists: 0, bytesPut: 0, bytesGot: 0 });
    const a = packFile(1000);
    const b = packFile(2500);
    await d.put('p-s1', a.path);
    await d.put('p-s2', b.path);
    await d.get('p-s1', 10, 100);
    await d.get('p-s2', 0, 2500);
    await d.get('p-s2', 2000, 400);
    expect(d.stats()).toEqual({ puts: 2, gets: 3, deletes: 0, lists: 0, bytesPut: 3500, bytesGot: 3000 });
    expect(d.location).toMatch(k.kind !== 'local' ? /^s3:\/\/[a-z0-9.-]+\/contract-/ : /^file:\//);
  });

  test('concurrent puts and gets: every read byte-exact; racing puts of one name: one wins, the rest CONFLICT', async () => {
    const d = await open(k, { concurrency: 4 });
    const srcs = Array.from({ length: 24 }, (_, i) => packFile(1000 + i * 997));
    await Promise.all(srcs.map((s, i) => d.put(`p-con-${i}`, s.path)));
    const reads = Array.from({ length: 150 }, (_, j) => {
      const i = (j * 7) % srcs.length;
      const src = srcs[i]!.bytes;
      const offset = (j * 131) % src.length;
      const length = Math.min(src.length - offset, 1 + ((j * 977) % 3000));
      return d.get(`p-con-${i}`, offset, length).then((got) => got.equals(src.subarray(offset, offset + length)));
    });
    expect((await Promise.all(reads)).every(Boolean)).toBe(true);

    const rivals = Array.from({ length: 6 }, (_, i) => packFile(4000 + i));
    const results = await Promise.all(rivals.map((r) => codeOf(d.put('p-race', r.path))));
    expect(results.filter((r) => r === 'resolved')).toHaveLength(1);
    expect(results.filter((r) => r === 'CONFLICT')).toHaveLength(5);
    const winner = rivals[results.indexOf('resolved')]!.bytes;
    expect((await d.get('p-race', 0, winner.length)).equals(winner)).toBe(true);
    expect((await listAll(d)).get('p-race')).toBe(winner.length);
  });
});

describe('S3PackDriver at S3 sizes', () => {
  test('1100 packs: listed in pages of 1000, deleted in DeleteObjects requests of 1000 and 100', async () => {
    const d = await open(kinds[1]!);
    const src = packFile(16);
    const names = Array.from({ length: 1100 }, (_, i) => `p-many-${String(i).padStart(4, '0')}`);
    await Promise.all(names.map((n) => d.put(n, src.path)));
    expect([...(await listAll(d)).keys()]).toEqual(names);
    await d.delete(names);
    expect(d.stats()).toMatchObject({ puts: 1100, lists: 2, deletes: 2 });
    expect(await listAll(d)).toEqual(new Map());
  });
});

describe('S3PackDriver with the MD5 told (the spool hashes what it appends)', () => {
  test('the told MD5 is what S3 checks: right, the pack is stored; wrong (the file is not what was written), refused and nothing stored', async () => {
    for (const k of [kinds[1]!, kinds[2]!]) {
      const d = await open(k);
      const { path, bytes } = packFile(70_001);
      const md5 = createHash('md5').update(bytes).digest();
      await d.put('p-told', path, { md5, size: bytes.length });
      expect((await d.get('p-told', 0, bytes.length)).equals(bytes)).toBe(true);
      const other = createHash('md5').update(Buffer.concat([bytes.subarray(1), Buffer.from([bytes[0]! ^ 1])])).digest();
      await expect(d.put('p-told-bad', path, { md5: other, size: bytes.length })).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
      expect((await listAll(d)).has('p-told-bad')).toBe(false);
      await expect(d.get('p-told-bad', 0, 1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    }
  });
});

describe('LocalPackDriver', () => {
  test('leaves no temporary files; list ignores files that are not packs; reads still work past the open-file cache', async () => {
    const dir = join(newDir(), 'packs');
    const d = new LocalPackDriver({ dir, openFiles: 2 });
    opened.push(d);
    const srcs = Array.from({ length: 5 }, () => packFile(777));
    for (const [i, s] of srcs.entries()) await d.put(`p-${i}`, s.path);
    expect(await codeOf(d.put('p-0', srcs[1]!.path))).toBe('CONFLICT');
    writeFileSync(join(dir, 'notes.txt'), 'x');
    expect(readdirSync(dir).sort()).toEqual(['notes.txt', 'p-0.pack', 'p-1.pack', 'p-2.pack', 'p-3.pack', 'p-4.pack']);
    expect([...(await listAll(d)).keys()]).toEqual(['p-0', 'p-1', 'p-2', 'p-3', 'p-4']);
    for (let round = 0; round < 3; round++) {
      for (const [i, s] of srcs.entries()) expect((await d.get(`p-${i}`, 100, 300)).equals(s.bytes.subarray(100, 400))).toBe(true);
    }
    await d.delete(['p-3']);
    expect(await codeOf(d.get('p-3', 0, 1))).toBe('NOT_FOUND');
  });
});

type Fault = 'pass' | 'reset' | 'drop-response';

/**
 * A TCP proxy to `port`; each new connection takes the next fault of the
 * queue (then 'pass'): 'reset' resets it at its first request bytes,
 * 'drop-response' lets the request through to the store and resets the client
 * as the answer arrives.
 */
async function faultProxy(port: number): Promise<{ port: number; queue: Fault[]; connections: () => number; close(): Promise<void> }> {
  let n = 0;
  const queue: Fault[] = [];
  const open = new Set<Socket>();
  const server = createServer((client) => {
    n++;
    const mode = queue.shift() ?? 'pass';
    open.add(client);
    client.on('error', () => {}).on('close', () => open.delete(client));
    if (mode === 'reset') {
      client.once('data', () => client.resetAndDestroy());
      return;
    }
    const up = connect({ port, host: '127.0.0.1' });
    open.add(up);
    up.on('error', () => client.destroy()).on('close', () => { open.delete(up); client.destroy(); });
    client.on('close', () => up.destroy());
    client.pipe(up);
    if (mode === 'drop-response') up.once('data', () => client.resetAndDestroy());
    else up.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    queue,
    connections: () => n,
    close: () => new Promise<void>((r) => {
      for (const s of open) s.destroy();
      server.close(() => r());
    }),
  };
}

async function listening(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

describe('S3PackDriver failures', () => {
  test('parseS3Url', () => {
    expect(parseS3Url('s3://bucket-1/a/b/?endpoint=http://127.0.0.1:7480/&region=eu-west-1')).toEqual({
      bucket: 'bucket-1', prefix: 'a/b/', endpoint: 'http://127.0.0.1:7480', region: 'eu-west-1',
    });
    expect(parseS3Url('s3://bkt?region=us-east-1')).toEqual({ bucket: 'bkt', prefix: '', region: 'us-east-1' });
    for (const bad of ['http://bkt', 's3://ci', 's3://Bkt', 's3://bkt?endpoint=ftp://x', 's3://bkt?endpont=http://x', 's3://bkt/a/../b']) {
      expect(() => parseS3Url(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });

  test('a refused endpoint: STORE_UNAVAILABLE after 1 + retries attempts', async () => {
    const probe = createServer();
    const port = await listening(probe);
    await new Promise((r) => probe.close(r));
    const d = new S3PackDriver({ location: `s3://nowhere?endpoint=http://127.0.0.1:${port}&region=us-east-1`, credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, retries: 2, backoffMs: 10 });
    const e = await d.get('p-x', 0, 10).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STORE_UNAVAILABLE', detail: { attempts: 3 } });
    expect(await codeOf(d.put('p-x', packFile(10).path))).toBe('STORE_UNAVAILABLE');
    expect(d.stats()).toMatchObject({ gets: 3, puts: 3 });
    await d.close();
  });

  test('a server that accepts and never answers: each attempt times out, then STORE_UNAVAILABLE (no hang)', async () => {
    const held: Socket[] = [];
    const silent = createServer((s) => { held.push(s); s.on('error', () => {}); });
    const port = await listening(silent);
    const d = new S3PackDriver({ location: `s3://silent?endpoint=http://127.0.0.1:${port}`, credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, timeoutMs: 300, retries: 1, backoffMs: 10 });
    const e = await d.get('p-x', 0, 10).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STORE_UNAVAILABLE', detail: { attempts: 2 } });
    expect(held.length).toBe(2);
    await d.close();
    for (const s of held) s.destroy();
    await new Promise((r) => silent.close(r));
  }, 30_000);

  test('wrong credentials: STORE_UNAVAILABLE at once (HTTP 403, not retried)', async () => {
    const s3 = await testS3();
    const d = new S3PackDriver({ location: s3.withPrefix('contract-badcreds'), credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: 'wrong-secret' } });
    const e = await d.get('p-x', 0, 10).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STORE_UNAVAILABLE', detail: { status: 403, attempts: 1 } });
    await d.close();
  });

  test('dropped connections are retried: a put whose answer was lost is not a CONFLICT; a reset get succeeds', async () => {
    const s3 = await testS3();
    const rgwPort = Number(new URL(s3.endpoint).port);
    // Connection 0 carries the put to the store and loses its answer; 1 is the retry (412: exists, same ETag);
    // 2 the HEAD; 3 a get that is reset; then all pass.
    const proxy = await faultProxy(rgwPort);
    const creds = { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey };
    const direct = s3.withPrefix(`contract-flaky-${randomBytes(3).toString('hex')}`);
    opened.push(new S3PackDriver({ location: direct, credentials: creds })); // cleans up after the test, not through the proxy
    const location = direct.replace(`127.0.0.1:${rgwPort}`, `127.0.0.1:${proxy.port}`);
    const viaProxy: S3PackDriver[] = [];
    // A fresh driver has no pooled connection: its first request opens the proxy's next connection.
    const driver = () => {
      const d = new S3PackDriver({ location, credentials: creds, concurrency: 1, backoffMs: 10 });
      viaProxy.push(d);
      return d;
    };
    const src = packFile(50_000);
    proxy.queue.push('drop-response'); // the put reaches the store, its answer is lost; the retry gets 412 and the same ETag
    const d1 = driver();
    await d1.put('p-flaky', src.path);
    expect(d1.stats().puts).toBe(2);
    expect(await codeOf(d1.put('p-flaky', packFile(10).path))).toBe('CONFLICT'); // a real conflict still is one
    proxy.queue.push('reset', 'reset');
    const d2 = driver();
    expect((await d2.get('p-flaky', 1000, 20_000)).equals(src.bytes.subarray(1000, 21_000))).toBe(true);
    expect(d2.stats().gets).toBe(3);
    expect(proxy.queue).toEqual([]);
    for (const d of viaProxy) await d.close();
    await proxy.close();
  });
});

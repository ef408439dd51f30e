/**
 * Issue 13 (first part): what serving a qcow2's guest view over NBD costs,
 * against qemu reading the same qcow2 itself, in the same run.
 *
 *   npx tsx bench/nbd-read.ts IMAGE [--runs 3] [--json]
 *
 * `snapyard nbd-serve IMAGE` is started once (not timed); then, alternating
 * and `--runs` times each (medians):
 *   read     qemu-img bench: every 1 MiB of the disk read in order, 4 in
 *            flight, through nbd+unix (format raw) against the qcow2 file
 *   convert  qemu-img convert -O raw to a sparse scratch file: through NBD
 *            (holes found by NBD_CMD_BLOCK_STATUS) against the qcow2 file
 * Both sides are whole qemu-img processes (their start-up is in both); the
 * image is read once before timing, so both read it from the page cache.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { BIN, fmt, need, timedCmd } from './lib.js';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { runs: { type: 'string', default: '3' }, json: { type: 'boolean', default: false } } });
const image = positionals[0];
if (!image) {
  process.stderr.write('usage: npx tsx bench/nbd-read.ts IMAGE [--runs 3] [--json]\n');
  process.exit(2);
}
need('qemu-img', 'qemu-utils');
const runs = Number(values.runs);
const dir = mkdtempSync(join(tmpdir(), 'snapyard-nbd-bench-'));
const socket = join(dir, 'nbd.sock');
const url = `nbd+unix:///?socket=${socket}`;
const log = (s: string) => process.stderr.write(`${s}\n`);

const server = spawn(process.execPath, [BIN, 'nbd-serve', image, '--socket', socket], { stdio: ['ignore', 'pipe', 'inherit'] });
const stop = () => {
  if (server.exitCode === null) server.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', stop);
process.on('SIGINT', () => process.exit(130));

try {
  await new Promise<void>((resolve, reject) => {
    server.stdout!.once('data', () => resolve());
    server.once('exit', (code) => reject(new Error(`nbd-serve exited ${code}`)));
  });
  const info = JSON.parse(await new Promise<string>((resolve) => {
    const p = spawn('qemu-img', ['info', '--output=json', image], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('close', () => resolve(out));
  })) as { 'virtual-size': number };
  const size = info['virtual-size'];
  const count = Math.floor(size / (1024 * 1024));
  const bench = (fmtName: string, target: string) => ['bench', '-q', '-f', fmtName, '-c', String(count), '-d', '4', '-s', '1M', '-S', '1M', target];
  const out = join(dir, 'out.raw');
  const convert = (fmtName: string, target: string) => ['convert', '-f', fmtName, '-O', 'raw', target, out];
  timedCmd('qemu-img', bench('qcow2', image)); // warm the page cache
  const times: Record<string, number[]> = { readNbd: [], readLocal: [], convertNbd: [], convertLocal: [] };
  for (let i = 0; i < runs; i++) {
    times.readLocal!.push(timedCmd('qemu-img', bench('qcow2', image)));
    times.readNbd!.push(timedCmd('qemu-img', bench('raw', url)));
    rmSync(out, { force: true });
    times.convertLocal!.push(timedCmd('qemu-img', convert('qcow2', image)));
    rmSync(out, { force: true });
    times.convertNbd!.push(timedCmd('qemu-img', convert('raw', url)));
    log(`run ${i + 1}/${runs}: read ${times.readNbd!.at(-1)!.toFixed(2)} s vs ${times.readLocal!.at(-1)!.toFixed(2)} s, convert ${times.convertNbd!.at(-1)!.toFixed(2)} s vs ${times.convertLocal!.at(-1)!.toFixed(2)} s`);
  }
  const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
  const m = { readNbd: med(times.readNbd!), readLocal: med(times.readLocal!), convertNbd: med(times.convertNbd!), convertLocal: med(times.convertLocal!) };
  const result = {
    image,
    virtualSize: size,
    imageBytes: statSync(image).size,
    runs,
    read: { nbdSeconds: m.readNbd, localSeconds: m.readLocal, ratio: m.readNbd / m.readLocal, nbdRate: fmt(size, m.readNbd), localRate: fmt(size, m.readLocal) },
    convert: { nbdSeconds: m.convertNbd, localSeconds: m.convertLocal, ratio: m.convertNbd / m.convertLocal },
  };
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    process.stdout.write(`read the whole disk (1 MiB x ${count}, depth 4): NBD ${m.readNbd.toFixed(2)} s (${result.read.nbdRate}) vs qcow2 ${m.readLocal.toFixed(2)} s (${result.read.localRate}): ${result.read.ratio.toFixed(2)}x\n`);
    process.stdout.write(`qemu-img convert -O raw: NBD ${m.convertNbd.toFixed(2)} s vs qcow2 ${m.convertLocal.toFixed(2)} s: ${result.convert.ratio.toFixed(2)}x\n`);
  }
} finally {
  stop();
}

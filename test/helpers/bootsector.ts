/**
 * A tiny x86 boot-sector guest for tests that boot a real qemu-system-i386:
 * it counts forever, printing `C=XXXX\n` (the count in 4 hex digits) to the
 * serial port COM1 (0x3F8), then waits 4 BIOS timer ticks (~0.22 s, `hlt`
 * between ticks so TCG idles). The count lives in SI, so only a restored
 * VM state (not a reboot) continues it.
 *
 * The machine code is written out by hand (16-bit real mode, loaded at
 * 0x7C00); relative jumps are resolved from labels below.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { connect } from 'node:net';
import { promisify } from 'node:util';

type Op = number[] | { label: string } | { jump: number[]; to: string };

const PROGRAM: Op[] = [
  [0xfa], //                 cli
  [0x31, 0xc0], //           xor ax, ax
  [0x8e, 0xd8], //           mov ds, ax
  [0x8e, 0xd0], //           mov ss, ax
  [0xbc, 0x00, 0x7c], //     mov sp, 0x7c00
  [0xfb], //                 sti
  [0x31, 0xf6], //           xor si, si
  { label: 'main' },
  [0x46], //                 inc si
  [0xba, 0xf8, 0x03], //     mov dx, 0x3f8
  [0xb0, 0x43, 0xee], //     mov al, 'C' ; out dx, al
  [0xb0, 0x3d, 0xee], //     mov al, '=' ; out dx, al
  [0x89, 0xf3], //           mov bx, si
  [0xb9, 0x04, 0x00], //     mov cx, 4
  { label: 'nibble' },
  [0xc1, 0xc3, 0x04], //     rol bx, 4
  [0x88, 0xd8], //           mov al, bl
  [0x24, 0x0f], //           and al, 0x0f
  [0x04, 0x30], //           add al, '0'
  [0x3c, 0x3a], //           cmp al, '9' + 1
  { jump: [0x72], to: 'digit' }, // jb digit
  [0x04, 0x07], //           add al, 'A' - '9' - 1
  { label: 'digit' },
  [0xee], //                 out dx, al
  { jump: [0xe2], to: 'nibble' }, // loop nibble
  [0xb0, 0x0a, 0xee], //     mov al, '\n' ; out dx, al
  [0xb9, 0x04, 0x00], //     mov cx, 4
  { label: 'tick' },
  [0xa1, 0x6c, 0x04], //     mov ax, [0x046c]   (BIOS tick count)
  { label: 'idle' },
  [0xf4], //                 hlt
  [0x3b, 0x06, 0x6c, 0x04], // cmp ax, [0x046c]
  { jump: [0x74], to: 'idle' }, // je idle
  { jump: [0xe2], to: 'tick' }, // loop tick
  { jump: [0xeb], to: 'main' }, // jmp main
];

/** The 512-byte boot sector (code, zero padding, 0x55 0xAA). */
export function counterBootSector(): Buffer {
  const labels = new Map<string, number>();
  let at = 0;
  for (const op of PROGRAM) {
    if (Array.isArray(op)) at += op.length;
    else if ('label' in op) labels.set(op.label, at);
    else at += op.jump.length + 1;
  }
  const out = Buffer.alloc(512);
  at = 0;
  for (const op of PROGRAM) {
    if (Array.isArray(op)) {
      out.set(op, at);
      at += op.length;
    } else if ('jump' in op) {
      out.set(op.jump, at);
      at += op.jump.length + 1;
      const rel = labels.get(op.to)! - at;
      if (rel < -128 || rel > 127) throw new Error(`jump to ${op.to} out of range`);
      out.writeInt8(rel, at - 1);
    }
  }
  out[510] = 0x55;
  out[511] = 0xaa;
  return out;
}

const exec = promisify(execFile);

/** A qcow2 image of `sizeMiB` MiB whose first sector is the counter guest. */
export async function makeCounterImage(path: string, sizeMiB = 4): Promise<void> {
  const raw = `${path}.raw`;
  writeFileSync(raw, Buffer.alloc(0));
  const fd = openSync(raw, 'r+');
  try {
    writeSync(fd, counterBootSector(), 0, 512, 0);
    writeSync(fd, Buffer.alloc(1), 0, 1, sizeMiB * 1024 * 1024 - 1);
  } finally {
    closeSync(fd);
  }
  await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, path]);
  await exec('rm', ['-f', raw]);
}

/** The counts the guest printed so far (complete lines only). */
export function countsIn(serialFile: string): number[] {
  if (!existsSync(serialFile)) return [];
  const out: number[] = [];
  for (const m of readFileSync(serialFile, 'latin1').matchAll(/(?:^|\n)C=([0-9A-F]{4})(?=\n)/g)) out.push(parseInt(m[1]!, 16));
  return out;
}

/** A running qemu-system-i386 on one qcow2 drive, its serial port in a file and its HMP monitor on a unix socket. */
export class CounterVm {
  private constructor(
    private readonly proc: ChildProcess,
    readonly serialFile: string,
    private readonly monitorSock: string,
    private readonly stderr: () => string,
  ) {}

  static start(image: string, work: string, name: string, loadvm?: string): CounterVm {
    const serialFile = `${work}/${name}.serial`;
    const monitorSock = `${work}/${name}.monitor`;
    const args = [
      '-machine', 'pc,accel=tcg', '-m', '16', '-nographic', '-nodefaults', '-no-user-config',
      '-drive', `file=${image},format=qcow2,if=ide,index=0,media=disk`,
      '-serial', `file:${serialFile}`,
      '-monitor', `unix:${monitorSock},server=on,wait=off`,
      ...(loadvm ? ['-loadvm', loadvm] : []),
    ];
    const proc = spawn('qemu-system-i386', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    return new CounterVm(proc, serialFile, monitorSock, () => err);
  }

  /** Waits until the guest printed at least `n` counts (or fails after `timeoutMs`). */
  async waitForCounts(n: number, timeoutMs = 20_000): Promise<number[]> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const c = countsIn(this.serialFile);
      if (c.length >= n) return c;
      if (this.proc.exitCode !== null) throw new Error(`qemu exited (${this.proc.exitCode}): ${this.stderr()}`);
      if (Date.now() > until) throw new Error(`the guest printed ${c.length} counts in ${timeoutMs} ms, wanted ${n}: ${this.stderr()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Runs an HMP monitor command and returns its output (up to the next prompt). */
  async monitor(command: string, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await hmp(this.monitorSock, command, deadline);
      } catch (e) {
        if (Date.now() > deadline || this.proc.exitCode !== null) throw new Error(`monitor ${command}: ${String(e)} ${this.stderr()}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Stops qemu: `quit` through the monitor (images closed cleanly), SIGKILL if it lingers past 10 s. */
  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.proc.once('exit', () => r()));
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    try {
      await hmp(this.monitorSock, 'quit', Date.now() + 5_000).catch(() => undefined);
      await exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

function hmp(sock: string, command: string, deadline: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(sock);
    let buf = '';
    let sent = false;
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error('monitor timed out'));
    }, Math.max(1, deadline - Date.now()));
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    // `quit` closes the monitor without a prompt.
    c.on('close', () => {
      clearTimeout(timer);
      if (sent) resolve(buf);
      else reject(new Error('monitor closed'));
    });
    c.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.endsWith('(qemu) ')) return;
      if (!sent) {
        sent = true;
        buf = '';
        c.write(`${command}\n`);
        return;
      }
      clearTimeout(timer);
      c.end();
      resolve(buf);
    });
  });
}

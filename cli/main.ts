import type { Command } from 'commander';
import { SnapyardError } from '../storage/errors.js';
import { describeError } from './errors.js';

/**
 * The commands' modules are loaded when the command runs: `snapyard mount`
 * (a pod's first disk read waits for it to listen) loads only its own, not
 * the server's, the push's or the other commands'; nor does `snapyard pull`
 * (node start-up is part of every pull). These are registered alone.
 */
const SOLO: Record<string, () => Promise<(program: Command) => void>> = {
  mount: async () => (await import('./mount.js')).registerMount,
  pull: async () => (await import('./pull-command.js')).registerPull,
};

async function programFor(argv: string[]): Promise<Command> {
  const solo = SOLO[argv[2] ?? ''];
  if (solo) {
    const [{ Command }, register] = await Promise.all([import('commander'), solo()]);
    const program = new Command('snapyard').description('content-addressed snapshot registry for QEMU disk images').showHelpAfterError();
    register(program);
    return program;
  }
  return (await import('./program.js')).buildProgram();
}

function fail(e: unknown): never {
  const { line, exitCode } = describeError(e);
  process.stderr.write(`snapyard: ${line}\n`);
  if (process.env.SNAPYARD_DEBUG === '1' && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  process.exit(exitCode);
}

export async function main(argv: string[]): Promise<void> {
  // Errors that escape a stream (a socket reset under a pipeline) are reported the same way: one line, non-zero exit.
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  // The AWS SDK (S3 store) prints a 9-line NodeVersionSupportWarning on Node 20 about SDK versions published
  // after January 2027; the version package-lock.json pins runs on Node 20 and the image runs Node 22. Set it
  // to "false" to see the warning.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // Node exits when nothing is left to wait on, even if the command's promise never settled (a stream
  // that ended without its end or error event): that must never look like success (exit 0, no output).
  let settled = false;
  process.on('beforeExit', () => {
    if (!settled) fail(new SnapyardError('INTERNAL', 'the command stopped before it finished: it was left waiting on a connection or stream that ended without a word (run it again; SNAPYARD_DEBUG=1 for details)'));
  });
  try {
    await (await programFor(argv)).parseAsync(argv);
    settled = true;
  } catch (e) {
    settled = true;
    fail(e);
  }
}

import { Command, InvalidArgumentError } from 'commander';
import { DEFAULT_FASTCDC } from '../storage/fastcdc.js';
import { isSnapyardError } from '../storage/errors.js';
import { serve } from './serve.js';
import { chunkFile } from './chunk.js';
import { inspectFile } from './inspect.js';

function int(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number`);
    return Number(v);
  };
}

export function buildProgram(): Command {
  const program = new Command('snapyard')
    .description('content-addressed snapshot registry for QEMU disk images')
    .showHelpAfterError();

  program
    .command('serve')
    .description('serve the OCI registry on the embedded store (local disk + SQLite)')
    .option('--data <dir>', 'data directory (env SNAPYARD_DATA)', process.env.SNAPYARD_DATA ?? './data')
    .option('--host <host>', 'address to listen on (env SNAPYARD_HOST)', process.env.SNAPYARD_HOST ?? '0.0.0.0')
    .option('--port <n>', 'port (env SNAPYARD_PORT)', int('--port'), Number(process.env.SNAPYARD_PORT ?? 5000))
    .option('--workers <n>', 'chunk worker threads (hash + zstd)', int('--workers'))
    .option('--level <n>', 'zstd level for new chunks (default 1)', int('--level'))
    .action(async (o: { data: string; host: string; port: number; workers?: number; level?: number }) => {
      await serve(o);
    });

  program
    .command('chunk')
    .description('print the FastCDC v2020 chunks of a local file')
    .argument('<file>')
    .option('--min <n>', 'minimum chunk size', int('--min'), DEFAULT_FASTCDC.minSize)
    .option('--avg <n>', 'average chunk size', int('--avg'), DEFAULT_FASTCDC.avgSize)
    .option('--max <n>', 'maximum chunk size', int('--max'), DEFAULT_FASTCDC.maxSize)
    .option('--json', 'one JSON object per line: {"offset":0,"length":21325,"digest":"sha256:..."}')
    .action(async (file: string, o: { min: number; avg: number; max: number; json?: boolean }) => {
      await chunkFile(file, { minSize: o.min, avgSize: o.avg, maxSize: o.max }, o.json === true);
    });

  program
    .command('inspect')
    .description('qcow2 facts (version, sizes, allocation, backing file, snapshots) and FastCDC chunk statistics of a local file')
    .argument('<file>')
    .option('--json', 'one JSON object (keys documented in cli/inspect.ts)')
    .action(async (file: string, o: { json?: boolean }) => {
      await inspectFile(file, { json: o.json === true });
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (isSnapyardError(e)) {
      process.stderr.write(`snapyard: ${e.code}: ${e.message}\n`);
      process.exit(2);
    }
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' || err.code === 'EACCES' || err.code === 'EISDIR') {
      process.stderr.write(`snapyard: ${err.message}\n`);
      process.exit(2);
    }
    throw e;
  }
}

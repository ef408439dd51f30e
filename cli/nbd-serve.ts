/**
 * `snapyard nbd-serve FILE --socket PATH`: a local qcow2 or raw file's guest
 * view as a read-only NBD export on a unix socket (the default export, and
 * under --name too), until SIGTERM/SIGINT. For debugging, and the first
 * brick of `snapyard mount` (issue 13; docs/nbd.md).
 */
import type { Command } from 'commander';
import { NbdServer } from '../client/nbd/server.js';
import { openFileSource, type BlockSource } from '../client/nbd/source.js';

export interface NbdServeFlags {
  socket: string;
  name?: string[];
}

export async function nbdServeCommand(file: string, o: NbdServeFlags): Promise<void> {
  const source = openFileSource(file);
  const exports = new Map<string, BlockSource>([['', source]]);
  for (const name of o.name ?? []) exports.set(name, source);
  const server = new NbdServer({
    exports,
    onError: (e) => process.stderr.write(`snapyard nbd-serve: ${e instanceof Error ? e.message : String(e)}\n`),
  });
  await server.listen(o.socket);
  const names = [...exports.keys()].map((n) => `nbd+unix:///${n}?socket=${o.socket}`);
  process.stdout.write(`serving ${file} (${source.size} bytes, read-only) on ${names.join(' ')}\n`);
  const stop = () => {
    void server.close().then(() => {
      source.close?.();
      process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export function registerNbdServe(program: Command): void {
  program
    .command('nbd-serve')
    .description("serve a local qcow2 or raw file's guest view read-only over NBD on a unix socket (nbd+unix:///?socket=PATH)")
    .argument('<file>', 'a qcow2 image (its backing chain is followed) or a raw file')
    .requiredOption('--socket <path>', 'the unix socket to listen on (a stale one is replaced)')
    .option('--name <name>', 'also export it under this name (nbd+unix:///NAME?socket=PATH); repeatable', (v: string, prev: string[] = []) => [...prev, v])
    .action(async (file: string, o: NbdServeFlags) => nbdServeCommand(file, o));
}

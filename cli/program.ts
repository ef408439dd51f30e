/** The `snapyard` command line: every command registered (cli/main.ts runs it; `mount` alone loads only its own modules). */
import { Command } from 'commander';
import { DEFAULT_FASTCDC } from '../storage/blobs/fastcdc.js';
import { serve } from './serve.js';
import { chunkFile } from './chunk.js';
import { inspectFile } from './inspect.js';
import { prefetchCommand, pushCommand } from './remote.js';
import { int, registerPull } from './pull-command.js';
import { inspectRef, looksLikeRef } from './inspect-remote.js';
import { existsSync } from 'node:fs';
import { registerLifecycleCommands } from './lifecycle.js';
import { registerMaintenanceCommands } from './maintenance.js';
import { registerPodInit } from './pod-init.js';
import { registerImport } from './import.js';
import { registerNbdServe } from './nbd-serve.js';
import { registerMount } from './mount.js';
import { addServeOptions, resolveServeOptions } from './serve-options.js';
import { addRegistryOptions, type RegistryFlags } from './registry-options.js';
import { passwdCommand } from './passwd.js';


export function buildProgram(): Command {
  const program = new Command('snapyard')
    .description('content-addressed snapshot registry for QEMU disk images')
    .showHelpAfterError();

  addServeOptions(program.command('serve'))
    .description('serve the OCI registry on the embedded store (local disk + SQLite); settings from flags, environment or --config FILE')
    .action(async (_o: unknown, cmd: Command) => {
      await serve(resolveServeOptions(cmd));
    });

  program
    .command('passwd')
    .description('add or change a user in an htpasswd file (bcrypt), reading the password from standard input')
    .argument('<file>', 'the htpasswd file (created if missing)')
    .argument('<user>')
    .action(async (file: string, user: string) => passwdCommand(file, user));

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

  addRegistryOptions(program.command('inspect'))
    .description('qcow2 facts (version, sizes, allocation, backing file, snapshots) and chunk statistics of a local file, or of a snapshot in the registry (REF)')
    .argument('<file|ref>', 'a local file, or repo:tag / repo@sha256:... (a path that exists wins)')
    .option('--json', 'one JSON object (keys documented in cli/inspect.ts and cli/inspect-remote.ts)')
    .action(async (target: string, o: RegistryFlags & { json?: boolean }) => {
      if (!existsSync(target) && looksLikeRef(target)) await inspectRef(target, o);
      else await inspectFile(target, { json: o.json === true });
    });

  addRegistryOptions(program.command('push'))
    .description('push a disk image: chunks it locally, uploads only what the registry lacks, publishes an OCI manifest')
    .argument('<ref>', 'repo:tag')
    .argument('<file>', 'the image (qcow2, or any file)')
    .option('--cache <dir>', 'client cache (env SNAPYARD_CACHE, default ~/.cache/snapyard)')
    .option('--level <n>', 'zstd level of the upload stream (default: 17 up to 16 MiB of new chunks, 9 up to 256 MiB, else 3)', int('--level'))
    .option('--seed <file>', 'a previous version on this machine that the registry holds (repeatable): new chunks go compressed against the chunks of it they resemble', (v: string, prev: string[] = []) => [...prev, v])
    .option('--json', 'print one JSON summary object')
    .action(async (ref: string, file: string, o: RegistryFlags & { cache?: string; level?: number; seed?: string[]; json?: boolean }) => {
      await pushCommand(ref, file, o);
    });

  registerPull(program);

  addRegistryOptions(program.command('prefetch'))
    .description('fill the cache (a node cache) with every chunk of the snapshots, so later pulls on this node need no network')
    .argument('<ref...>', 'repo:tag or repo@sha256:...')
    .option('--cache <dir>', 'client cache (env SNAPYARD_CACHE, default ~/.cache/snapyard)')
    .option('--concurrency <n>', 'parallel chunk requests (default 3)', int('--concurrency'))
    .option('--cache-max <size>', 'evict least recently used snapshots from the cache once it stores more than this (like 20G; env SNAPYARD_CACHE_MAX)')
    .option('--json', 'one JSON object per snapshot (chunks, chunksFetched, bytesDownloaded, seconds)')
    .action(async (refs: string[], o: RegistryFlags & { cache?: string; cacheMax?: string; json?: boolean; concurrency?: number }) => prefetchCommand(refs, o));

  registerPodInit(program);
  registerImport(program);
  registerNbdServe(program);
  registerMount(program);
  registerLifecycleCommands(program);
  registerMaintenanceCommands(program);
  return program;
}

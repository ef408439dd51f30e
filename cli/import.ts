/**
 * `snapyard import SRC REF`: brings snapshots packaged the old way (a qcow2
 * inside a container image's tar layer) into the registry (docs/import.md).
 * SRC: docker://HOST/REPO[:TAG], oci:DIR[:TAG], oci-archive:FILE[:TAG],
 * docker-archive:FILE[:REPO:TAG]. REF: repo:tag, or a repository (the source's
 * tag is kept; with --all-tags every tag of the source goes to the same tag).
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import type { Command } from 'commander';
import { ClientCache, defaultCacheDir } from '../client/cache.js';
import { importImage, type ImportSummary } from '../client/import/import.js';
import { parsePlatform } from '../client/import/image-manifest.js';
import { openSource } from '../client/import/open-source.js';
import { parseRef } from '../client/ref.js';
import { SnapyardError } from '../storage/errors.js';
import { isRepoName } from '../storage/protocol/ref-grammar.js';
import { Progress } from './progress.js';
import { addRegistryOptions, openRegistry, type RegistryFlags } from './registry-options.js';

interface ImportFlags extends RegistryFlags {
  srcCreds?: string;
  srcInsecure?: boolean;
  srcCaCert?: string;
  platform?: string;
  path?: string;
  allTags?: boolean;
  cache?: string;
  tmpDir?: string;
  json?: boolean;
}

function destination(refStr: string, allTags: boolean): { repo: string; tag: string | null } {
  if (isRepoName(refStr)) return { repo: refStr, tag: null };
  const ref = parseRef(refStr);
  if (!ref.tag) throw new SnapyardError('INVALID_ARGUMENT', `import REF is repo:tag or a repository, not a digest (${refStr})`);
  if (allTags) throw new SnapyardError('INVALID_ARGUMENT', `--all-tags imports every tag to the same tag: REF is a repository (${ref.repo}), not ${refStr}`);
  return { repo: ref.repo, tag: ref.tag };
}

function describe(s: ImportSummary): string {
  const p = s.push;
  return `imported ${s.source} (${s.member} of layer ${s.layer}) as ${s.ref} ${p.manifestDigest}\n` +
    `  ${p.size} bytes (${p.layout}), ${p.chunks} chunks, ${p.newChunks} new (${p.newRawBytes} bytes raw, ${p.uploadBytes} bytes sent), ${p.seconds.toFixed(2)} s\n`;
}

async function importCommand(src: string, refStr: string, o: ImportFlags): Promise<void> {
  const dest = destination(refStr, o.allTags === true);
  const platform = parsePlatform(o.platform);
  const tmpDir = o.tmpDir ?? tmpdir();
  const insecure = o.srcInsecure === true || o.insecure === true || process.env.SNAPYARD_INSECURE === 'true';
  let caCert: string | undefined;
  if (o.srcCaCert) {
    try {
      caCert = readFileSync(o.srcCaCert, 'utf8');
    } catch (e) {
      throw new SnapyardError('INVALID_ARGUMENT', `--src-ca-cert ${o.srcCaCert}: ${(e as Error).message}`);
    }
  }
  const source = await openSource(src, { ...(o.srcCreds !== undefined ? { creds: o.srcCreds } : {}), insecure, ...(caCert ? { caCert } : {}), tmpDir });
  const registry = openRegistry(o);
  const cache = new ClientCache(o.cache ?? defaultCacheDir());
  const progress = new Progress(!o.json && process.stderr.isTTY === true);
  try {
    let refs: Array<string | null>;
    if (o.allTags) {
      refs = (await source.tags()).sort();
      if (refs.length === 0) throw new SnapyardError('NOT_FOUND', `${source.name} has no tags`);
    } else refs = [source.reference];
    for (const reference of refs) {
      const tag = dest.tag ?? (reference && !reference.startsWith('sha256:') ? reference : null);
      if (tag === null) throw new SnapyardError('INVALID_ARGUMENT', `the source names no tag: give REF as repo:tag`);
      const s = await importImage(source, reference, dest.repo, tag, { registry, cache, platform, tmpDir, ...(o.path !== undefined ? { path: o.path } : {}), onPhase: (phase) => progress.update({ phase }) });
      if (o.json) process.stdout.write(`${JSON.stringify(s)}\n`);
      else process.stdout.write(describe(s));
    }
  } finally {
    progress.stop();
    await cache.close();
    await registry.close();
    await source.close();
  }
}

export function registerImport(program: Command): void {
  addRegistryOptions(program.command('import'))
    .description('import snapshots packaged the old way (a qcow2 in a container image layer) from a registry or an image archive')
    .argument('<src>', 'docker://HOST/REPO[:TAG], oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REPO:TAG]')
    .argument('<ref>', 'repo:tag, or a repository (keeps the source tag; --all-tags)')
    .option('--src-creds <user:pass>', 'credentials for the source registry (else its entry in the Docker config files)')
    .option('--src-insecure', 'plain http (or no certificate check) for the source registry; --insecure covers both')
    .option('--src-ca-cert <file>', 'also trust this CA certificate (PEM) for the source registry')
    .option('--platform <os/arch>', 'the image to take from an index or manifest list (default linux/amd64)')
    .option('--path <member>', 'the disk file inside the image (default: /snapshot.qcow2, /<tag>.qcow2, /emulator-snapshot/*.qcow2, /opt/builtin-images/*.builtin)')
    .option('--all-tags', 'import every tag of the source repository, each to the same tag in REF')
    .option('--cache <dir>', 'client cache (env SNAPYARD_CACHE, default ~/.cache/snapyard)')
    .option('--tmp-dir <dir>', 'where the disk is unpacked before it is pushed (default the system temp dir)')
    .option('--json', 'one JSON summary object per imported tag')
    .action(async (src: string, ref: string, o: ImportFlags) => importCommand(src, ref, o));
}

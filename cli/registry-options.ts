/**
 * The options every client command takes to reach a registry, and the
 * Registry they make: --registry (env SNAPYARD_REGISTRY), --creds (or
 * SNAPYARD_USERNAME / SNAPYARD_PASSWORD, or a Docker config file),
 * --ca-cert (env SNAPYARD_CA_CERT), --insecure (env SNAPYARD_INSECURE=true).
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { Registry, registryUrlOf } from '../client/registry.js';
import { resolveCredentials } from '../client/credentials.js';
import { SnapyardError } from '../storage/errors.js';

export const DEFAULT_REGISTRY = 'http://127.0.0.1:5000';

export interface RegistryFlags {
  registry?: string;
  creds?: string;
  caCert?: string;
  insecure?: boolean;
}

export function addRegistryOptions(cmd: Command): Command {
  return cmd
    .option('--registry <url>', `registry URL or host[:port][/prefix] (https unless --insecure; env SNAPYARD_REGISTRY, default ${DEFAULT_REGISTRY})`)
    .option('--creds <user:pass>', 'credentials (else SNAPYARD_USERNAME/SNAPYARD_PASSWORD, else REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json)')
    .option('--ca-cert <file>', 'also trust this CA certificate (PEM) for https (env SNAPYARD_CA_CERT)')
    .option('--insecure', 'plain http for a host without a scheme, and no certificate check for https (env SNAPYARD_INSECURE=true)');
}

export function registryUrl(flag: string | undefined): string {
  return flag ?? process.env.SNAPYARD_REGISTRY ?? DEFAULT_REGISTRY;
}

/** A registry client for the flags (close it when done). */
export function openRegistry(o: RegistryFlags, connections?: number): Registry {
  const insecure = o.insecure === true || process.env.SNAPYARD_INSECURE === 'true';
  const url = registryUrl(o.registry);
  const caFile = o.caCert ?? process.env.SNAPYARD_CA_CERT;
  let caCert: string | undefined;
  if (caFile) {
    try {
      caCert = readFileSync(caFile, 'utf8');
    } catch (e) {
      throw new SnapyardError('INVALID_ARGUMENT', `--ca-cert ${caFile}: ${(e as Error).message}`);
    }
  }
  const creds = resolveCredentials({ ...(o.creds !== undefined ? { creds: o.creds } : {}), hostPort: registryUrlOf(url, insecure).host });
  return new Registry(url, { creds, insecure, ...(caCert ? { caCert } : {}), ...(connections !== undefined ? { connections } : {}) });
}

/** Runs `fn` with a registry client for the flags, closed afterwards. */
export async function withRegistry<T>(o: RegistryFlags, fn: (r: Registry) => Promise<T>, connections?: number): Promise<T> {
  const reg = openRegistry(o, connections);
  try {
    return await fn(reg);
  } finally {
    await reg.close();
  }
}

/**
 * Where a client's registry credentials come from, first found wins:
 * `--creds USER:PASS`, SNAPYARD_USERNAME / SNAPYARD_PASSWORD, then a Docker
 * config file: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json,
 * ~/.docker/config.json (each may also be a Kubernetes `.dockerconfigjson`,
 * or a directory holding one), looked up by the registry's host[:port].
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SnapyardError } from '../storage/errors.js';

export interface Credentials {
  username: string;
  password: string;
}

export function parseCreds(s: string): Credentials {
  const colon = s.indexOf(':');
  if (colon <= 0) throw new SnapyardError('INVALID_ARGUMENT', '--creds must be USER:PASS');
  return { username: s.slice(0, colon), password: s.slice(colon + 1) };
}

/** The Docker config files to look in, in order (the ones that exist). */
export function authFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  const add = (p: string | undefined) => {
    if (!p || !existsSync(p)) return;
    if (statSync(p).isDirectory()) {
      for (const name of ['config.json', '.dockerconfigjson']) if (existsSync(join(p, name))) out.push(join(p, name));
    } else out.push(p);
  };
  add(env.REGISTRY_AUTH_FILE);
  if (env.DOCKER_CONFIG) add(env.DOCKER_CONFIG);
  add(join(env.HOME ?? homedir(), '.docker', 'config.json'));
  return out;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

/** Keys a config file may use for one registry: `host:port`, with or without a scheme or a path. */
function keyMatches(key: string, hostPort: string): boolean {
  const k = key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
  return k === hostPort;
}

/** Credentials for `hostPort` in one Docker config file; a corrupt file is a clear error. */
export function credentialsFromFile(path: string, hostPort: string): Credentials | null {
  let doc: { auths?: Record<string, AuthEntry> };
  try {
    doc = JSON.parse(readFileSync(path, 'utf8')) as typeof doc;
  } catch (e) {
    throw new SnapyardError('INVALID_ARGUMENT', `registry auth file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || (doc.auths !== undefined && (typeof doc.auths !== 'object' || doc.auths === null))) {
    throw new SnapyardError('INVALID_ARGUMENT', `registry auth file ${path}: "auths" must be an object`);
  }
  for (const [key, e] of Object.entries(doc.auths ?? {})) {
    if (!keyMatches(key, hostPort) || typeof e !== 'object' || e === null) continue;
    if (typeof e.username === 'string' && typeof e.password === 'string') return { username: e.username, password: e.password };
    if (typeof e.auth === 'string') {
      const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon <= 0) throw new SnapyardError('INVALID_ARGUMENT', `registry auth file ${path}: the "auth" of ${key} is not base64 of USER:PASS`);
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
  }
  return null;
}

export function resolveCredentials(opts: { creds?: string; hostPort: string; env?: NodeJS.ProcessEnv }): Credentials | null {
  const env = opts.env ?? process.env;
  if (opts.creds) return parseCreds(opts.creds);
  if (env.SNAPYARD_USERNAME) return { username: env.SNAPYARD_USERNAME, password: env.SNAPYARD_PASSWORD ?? '' };
  for (const f of authFiles(env)) {
    const c = credentialsFromFile(f, opts.hostPort);
    if (c) return c;
  }
  return null;
}

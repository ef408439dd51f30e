/**
 * Every `snapyard serve` setting, once: its flag, its environment variable,
 * its key in the config file (`--config FILE`, YAML, camelCase keys as
 * below), its default, and how its value is read. Precedence: flags >
 * environment > config file > defaults. A bad key or value in the file is a
 * clear error naming it.
 */
import { readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { SnapyardError } from '../storage/errors.js';
import { READ_CHECKS, type ReadCheck } from '../storage/chunks/chunk-codec.js';
import type { ServeOptions } from './serve.js';
import { parseSize } from './size.js';

type Kind = 'string' | 'int' | 'duration' | 'size' | 'bool';

interface Setting {
  key: string;
  flag: string;
  env: string;
  kind: Kind;
  help: string;
  default?: string | boolean;
}

/** The settings, in `serve --help` order. Keys are the config file's; values parse as their kind. */
export const SETTINGS: Setting[] = [
  { key: 'data', flag: '--data <dir>', env: 'SNAPYARD_DATA', kind: 'string', default: './data', help: 'data directory' },
  { key: 'metadata', flag: '--metadata <url>', env: 'SNAPYARD_METADATA', kind: 'string', help: 'registry metadata in PostgreSQL (postgres://USER[:PASSWORD]@HOST:PORT/DB; shared by replicas) instead of SQLite in the data directory' },
  { key: 'advertiseUrl', flag: '--advertise-url <url>', env: 'SNAPYARD_ADVERTISE_URL', kind: 'string', help: 'where the other replicas reach this one (e.g. http://POD_IP:5000): an OCI upload session is held by the replica that opened it, and the others relay its requests there (with --metadata postgres://)' },
  { key: 'store', flag: '--store <url>', env: 'SNAPYARD_STORE', kind: 'string', help: 'chunk packs in S3 (s3://BUCKET[/PREFIX]?endpoint=URL&region=R; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS config files; needs --metadata postgres://, which holds the chunk catalog) instead of the data directory' },
  { key: 'host', flag: '--host <host>', env: 'SNAPYARD_HOST', kind: 'string', default: '0.0.0.0', help: 'address to listen on' },
  { key: 'port', flag: '--port <n>', env: 'SNAPYARD_PORT', kind: 'int', default: '5000', help: 'port' },
  { key: 'workers', flag: '--workers <n>', env: 'SNAPYARD_WORKERS', kind: 'int', help: 'chunk worker threads (hash + zstd; default 2)' },
  { key: 'level', flag: '--level <n>', env: 'SNAPYARD_LEVEL', kind: 'int', help: 'zstd level for new chunks (default 1)' },
  { key: 'verifyReads', flag: '--verify-reads <check>', env: 'SNAPYARD_VERIFY_READS', kind: 'string', default: 'checksum', help: "how a chunk read back from the store is checked: 'checksum' (zstd's content checksum of the frame, where it has one; sha256 otherwise) or 'digest' (sha256 of every chunk, ~2x the CPU of a GET). Writes, pushed and pulled chunks and `snapyard verify` always check sha256" },
  { key: 'uploadTtl', flag: '--upload-ttl <duration>', env: 'SNAPYARD_UPLOAD_TTL', kind: 'duration', default: '1h', help: 'idle upload and push sessions expire after this' },
  { key: 'htpasswd', flag: '--htpasswd <file>', env: 'SNAPYARD_HTPASSWD', kind: 'string', help: 'require login: bcrypt entries (htpasswd -B, or snapyard passwd)' },
  { key: 'access', flag: '--access <file>', env: 'SNAPYARD_ACCESS', kind: 'string', help: 'access rules (YAML: users x repository patterns x actions; docs/auth.md)' },
  { key: 'anonymousPull', flag: '--anonymous-pull', env: 'SNAPYARD_ANONYMOUS_PULL', kind: 'bool', help: 'callers without credentials may pull every repository' },
  { key: 'tlsCert', flag: '--tls-cert <file>', env: 'SNAPYARD_TLS_CERT', kind: 'string', help: 'serve https with this certificate chain (PEM; re-read on SIGHUP)' },
  { key: 'tlsKey', flag: '--tls-key <file>', env: 'SNAPYARD_TLS_KEY', kind: 'string', help: 'the private key of --tls-cert (PEM)' },
  { key: 'tokenSecret', flag: '--token-secret <file>', env: 'SNAPYARD_TOKEN_SECRET_FILE', kind: 'string', help: "sign bearer tokens with this file's bytes (share it between replicas; default a random key per process)" },
  { key: 'tokenTtl', flag: '--token-ttl <duration>', env: 'SNAPYARD_TOKEN_TTL', kind: 'duration', default: '5m', help: 'bearer token lifetime' },
  { key: 'authRealm', flag: '--auth-realm <url>', env: 'SNAPYARD_AUTH_REALM', kind: 'string', help: "the token endpoint URL in challenges (default: this server's /token as the request reached it)" },
  { key: 'authService', flag: '--auth-service <name>', env: 'SNAPYARD_AUTH_SERVICE', kind: 'string', default: 'snapyard', help: 'the service name in challenges and tokens' },
  { key: 'headerTimeout', flag: '--header-timeout <duration>', env: 'SNAPYARD_HEADER_TIMEOUT', kind: 'duration', default: '20s', help: "a request's headers must arrive within this" },
  { key: 'idleTimeout', flag: '--idle-timeout <duration>', env: 'SNAPYARD_IDLE_TIMEOUT', kind: 'duration', default: '60s', help: 'close connections idle (no bytes either way) this long, stalled bodies included' },
  { key: 'maxConnections', flag: '--max-connections <n>', env: 'SNAPYARD_MAX_CONNECTIONS', kind: 'int', help: 'refuse connections beyond this many (default 8192)' },
  { key: 'cacheMemory', flag: '--cache-memory <size>', env: 'SNAPYARD_CACHE_MEMORY', kind: 'size', default: '128M', help: 'one memory budget for the caches (blob indexes, delta chunk sets and index differences, resemblance tables, compressed frames, S3 read cache): the least recently used entry of any goes first' },
  { key: 'maxBlobSize', flag: '--max-blob-size <size>', env: 'SNAPYARD_MAX_BLOB_SIZE', kind: 'size', default: '64G', help: 'the largest blob an upload or push may make' },
  { key: 'maxSessionsPerUser', flag: '--max-sessions-per-user <n>', env: 'SNAPYARD_MAX_SESSIONS_PER_USER', kind: 'int', help: 'open upload and push sessions per user (default 64; 429 past it)' },
  { key: 'maxSessions', flag: '--max-sessions <n>', env: 'SNAPYARD_MAX_SESSIONS', kind: 'int', help: 'open upload and push sessions in all (default 256)' },
  { key: 'metricsAddr', flag: '--metrics-addr <host:port>', env: 'SNAPYARD_METRICS_ADDR', kind: 'string', help: 'serve GET /metrics on a listener of its own instead of the main port' },
  { key: 'shutdownGrace', flag: '--shutdown-grace <duration>', env: 'SNAPYARD_SHUTDOWN_GRACE', kind: 'duration', default: '6s', help: 'on SIGTERM, requests in flight get this long to finish before their connections are cut' },
  { key: 'ui', flag: '--no-ui', env: 'SNAPYARD_UI', kind: 'bool', help: 'do not serve the web page (/ui/, and / redirecting to it; docs/ui.md); the admin API stays' },
  { key: 'disableMetrics', flag: '--disable-metrics', env: 'SNAPYARD_DISABLE_METRICS', kind: 'bool', help: 'count no metrics and serve no /metrics' },
  { key: 'minFreeDisk', flag: '--min-free-disk <size>', env: 'SNAPYARD_MIN_FREE_DISK', kind: 'size', default: '256M', help: '/readyz answers 503 below this much free space in the data directory' },
];

const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };

/** "0s", "30m", "24h", "1h30m", "500ms", "2d" -> seconds. */
export function parseDuration(v: string): number {
  const s = v.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d))+$/.test(s)) throw new SnapyardError('INVALID_ARGUMENT', `${JSON.stringify(v)} is not a duration (like 0s, 30m, 24h)`);
  let total = 0;
  for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) total += Number(m[1]) * UNITS[m[2]!]!;
  return total;
}

export { parseSize };

export function addServeOptions(cmd: Command): Command {
  cmd.option('--config <file>', 'read settings from this YAML file (keys as in deploy/snapyard.example.yaml; flags and environment win over it)');
  for (const s of SETTINGS) {
    // Commander takes any value of a boolean flag's variable as true: booleans read theirs here (resolveServeOptions).
    const o = new Option(s.flag, `${s.help} (config key ${s.key}${s.kind === 'bool' ? `; env ${s.env}=${s.flag.startsWith('--no-') ? 'false' : 'true'}` : ''})`);
    if (s.kind !== 'bool') o.env(s.env);
    if (s.default !== undefined && s.kind !== 'bool') o.default(s.default);
    cmd.addOption(o);
  }
  return cmd;
}

type Raw = string | number | boolean;

function convert(s: Setting, v: Raw, where: string): string | number | boolean {
  const bad = (what: string) => new SnapyardError('INVALID_ARGUMENT', `${where}: ${s.key} ${what}`);
  switch (s.kind) {
    case 'string':
      if (typeof v !== 'string' || v === '') throw bad('must be a non-empty string');
      return v;
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === '1') return true;
      if (v === 'false' || v === '0' || v === '') return false;
      throw bad(`must be true or false, not ${JSON.stringify(v)}`);
    case 'int': {
      const n = typeof v === 'number' ? v : /^\d+$/.test(String(v)) ? Number(v) : NaN;
      if (!Number.isSafeInteger(n) || n < 0) throw bad(`must be a whole number, not ${JSON.stringify(v)}`);
      return n;
    }
    case 'duration':
      try {
        return typeof v === 'number' ? v : parseDuration(String(v));
      } catch (e) {
        throw bad((e as Error).message);
      }
    case 'size':
      try {
        return typeof v === 'number' ? v : parseSize(String(v));
      } catch (e) {
        throw bad((e as Error).message);
      }
  }
}

/** Reads a config file: a YAML mapping of known keys (anything else is an error naming it). */
export function readConfigFile(path: string): Record<string, Raw> {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new SnapyardError('INVALID_ARGUMENT', `config file ${path}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new SnapyardError('INVALID_ARGUMENT', `config file ${path}: expected a mapping of settings`);
  const known = new Map(SETTINGS.map((s) => [s.key, s]));
  const out: Record<string, Raw> = {};
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    const s = known.get(k);
    if (!s) throw new SnapyardError('INVALID_ARGUMENT', `config file ${path}: unknown key ${JSON.stringify(k)} (known: ${SETTINGS.map((x) => x.key).join(', ')})`);
    if (v === null) continue;
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') throw new SnapyardError('INVALID_ARGUMENT', `config file ${path}: ${k} must be a string, number or boolean`);
    convert(s, v, `config file ${path}`);
    out[k] = v;
  }
  return out;
}

/** The settings in force: flags > environment > config file > defaults, each converted to its kind. */
export function resolveServeOptions(cmd: Command): ServeOptions {
  const given = cmd.opts<Record<string, Raw | undefined>>();
  const file = typeof given.config === 'string' ? readConfigFile(given.config) : {};
  const v: Record<string, string | number | boolean> = {};
  for (const s of SETTINGS) {
    let source = cmd.getOptionValueSource(s.key);
    if (s.kind === 'bool' && source !== 'cli' && process.env[s.env] !== undefined) {
      given[s.key] = process.env[s.env];
      source = 'env';
    }
    const fromFlagOrEnv = source === 'cli' || source === 'env';
    const raw = fromFlagOrEnv ? given[s.key] : file[s.key] ?? given[s.key];
    if (raw === undefined) continue;
    v[s.key] = convert(s, raw, source === 'env' ? `environment ${s.env}` : source === 'cli' ? `flag ${s.flag.split(' ')[0]}` : file[s.key] !== undefined ? `config file ${given.config}` : 'default');
  }
  const num = (k: string) => (v[k] === undefined ? undefined : (v[k] as number));
  const str = (k: string) => (v[k] === undefined ? undefined : (v[k] as string));
  const opts: ServeOptions = { data: str('data')!, host: str('host')!, port: num('port')! };
  const set = <K extends keyof ServeOptions>(k: K, x: ServeOptions[K] | undefined) => {
    if (x !== undefined) opts[k] = x;
  };
  set('metadata', str('metadata'));
  set('store', str('store'));
  set('advertiseUrl', str('advertiseUrl'));
  set('workers', num('workers'));
  set('level', num('level'));
  const verifyReads = str('verifyReads');
  if (verifyReads !== undefined && !(READ_CHECKS as readonly string[]).includes(verifyReads)) {
    throw new SnapyardError('INVALID_ARGUMENT', `verifyReads must be one of ${READ_CHECKS.join(', ')}, not ${JSON.stringify(verifyReads)}`);
  }
  set('verifyReads', verifyReads as ReadCheck | undefined);
  set('uploadTtlMs', v.uploadTtl === undefined ? undefined : (v.uploadTtl as number) * 1000);
  set('htpasswd', str('htpasswd'));
  set('access', str('access'));
  set('anonymousPull', v.anonymousPull as boolean | undefined);
  set('tlsCert', str('tlsCert'));
  set('tlsKey', str('tlsKey'));
  set('tokenSecret', str('tokenSecret'));
  set('tokenTtlSeconds', num('tokenTtl'));
  set('authRealm', str('authRealm'));
  set('authService', str('authService'));
  set('headerTimeoutMs', v.headerTimeout === undefined ? undefined : (v.headerTimeout as number) * 1000);
  set('idleTimeoutMs', v.idleTimeout === undefined ? undefined : (v.idleTimeout as number) * 1000);
  set('maxConnections', num('maxConnections'));
  set('maxBlobBytes', num('maxBlobSize'));
  set('cacheMemoryBytes', num('cacheMemory'));
  set('maxSessionsPerUser', num('maxSessionsPerUser'));
  set('maxSessionsTotal', num('maxSessions'));
  set('metricsAddr', str('metricsAddr'));
  set('minFreeBytes', num('minFreeDisk'));
  if (v.disableMetrics === true) opts.metricsEnabled = false;
  if (v.ui === false) opts.ui = false;
  set('shutdownGraceMs', v.shutdownGrace === undefined ? undefined : (v.shutdownGrace as number) * 1000);
  return opts;
}

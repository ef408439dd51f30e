/**
 * The web page's files (built into dist/ui/ by scripts/build-ui.mjs), read
 * once when the server starts and served from memory: each with its gzip
 * and brotli forms (precomputed by the build; made here if missing), a
 * strong ETag, and the cache policy: content-hashed assets for a year,
 * the shell (index.html) revalidated every time.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import { respond } from '../context.js';

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  png: 'image/png',
  svg: 'image/svg+xml',
};

interface UiFile {
  body: Buffer;
  gzip: Buffer;
  br: Buffer;
  type: string;
  etag: string;
}

/** Where the built page is: dist/ui next to the compiled server, or <repo>/dist/ui when running from sources. */
export function defaultUiDir(): string | null {
  const here = import.meta.dirname;
  for (const dir of [resolve(here, '..', '..', 'ui'), resolve(here, '..', '..', 'dist', 'ui')]) {
    if (existsSync(join(dir, 'index.html'))) return dir;
  }
  return null;
}

function readOne(dir: string, name: string): UiFile {
  const body = readFileSync(join(dir, name));
  const pre = (ext: string) => (existsSync(join(dir, `${name}.${ext}`)) ? readFileSync(join(dir, `${name}.${ext}`)) : null);
  const ext = name.slice(name.lastIndexOf('.') + 1);
  return {
    body,
    gzip: pre('gz') ?? gzipSync(body),
    br: pre('br') ?? brotliCompressSync(body),
    type: TYPES[ext] ?? 'application/octet-stream',
    etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
  };
}

export class UiAssets {
  private constructor(
    private readonly shellFile: UiFile,
    private readonly assets: Map<string, UiFile>,
  ) {}

  /** The page in `dir` (index.html and assets/); null when it was not built there. */
  static load(dir: string | null): UiAssets | null {
    if (dir === null || !existsSync(join(dir, 'index.html'))) return null;
    const assets = new Map<string, UiFile>();
    const adir = join(dir, 'assets');
    if (existsSync(adir)) {
      for (const f of readdirSync(adir)) if (!/\.(gz|br)$/.test(f)) assets.set(f, readOne(adir, f));
    }
    return new UiAssets(readOne(dir, 'index.html'), assets);
  }

  /** GET /ui/ and any page under it (the page routes itself): the shell, never cached without revalidation. */
  shell(headers: Headers): Response {
    return send(this.shellFile, headers, 'no-cache');
  }

  /** GET /ui/assets/NAME: content-hashed, so cached for a year; 404 for anything else. */
  asset(name: string, headers: Headers): Response {
    const f = this.assets.get(name);
    if (!f) return respond(404, { 'Content-Type': 'text/plain; charset=utf-8' }, 'not found\n');
    return send(f, headers, 'public, max-age=31536000, immutable');
  }
}

function send(f: UiFile, headers: Headers, cacheControl: string): Response {
  const base: Record<string, string> = { 'Content-Type': f.type, ETag: f.etag, 'Cache-Control': cacheControl, Vary: 'Accept-Encoding', 'X-Content-Type-Options': 'nosniff' };
  if (f.type.startsWith('text/html')) base['Content-Security-Policy'] = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";
  const inm = headers.get('if-none-match');
  if (inm !== null && inm.split(',').some((t) => t.trim() === f.etag || t.trim() === `W/${f.etag}`)) return respond(304, base);
  const accept = headers.get('accept-encoding') ?? '';
  const wants = (enc: string) => new RegExp(`(^|[,\\s])${enc}(;q=(?!0(\\.0*)?\\b)[\\d.]+)?\\s*(,|$)`, 'i').test(accept);
  if (wants('br')) return respond(200, { ...base, 'Content-Encoding': 'br', 'Content-Length': String(f.br.length) }, f.br);
  if (wants('gzip')) return respond(200, { ...base, 'Content-Encoding': 'gzip', 'Content-Length': String(f.gzip.length) }, f.gzip);
  return respond(200, { ...base, 'Content-Length': String(f.body.length) }, f.body);
}

/**
 * An htpasswd file of bcrypt entries (`htpasswd -B`, as distribution uses):
 * `user:$2y$...` one a line. The file is re-read when it changes (checked at
 * most once a second) and on reload(). A successful check is remembered
 * (keyed by a hash of user, password and entry), so Basic auth on every
 * request costs a bcrypt only once; bcrypt work runs a few at a time.
 */
import { createHash } from 'node:crypto';
import { readFileSync, renameSync, statSync, writeFileSync, existsSync, openSync, fsyncSync, closeSync } from 'node:fs';
import bcrypt from 'bcryptjs';
import { SnapyardError } from '../../storage/errors.js';

const USER_RE = /^[^:\s]{1,255}$/;
/** bcrypt of a random password, compared against for unknown users (no timing difference). */
const DUMMY_HASH = '$2b$10$RQ/YI3kom9AdTmnqcc3iLeUzvqoElOpeZzKAaVrmVCAhTTHQSf33a';

export class Htpasswd {
  private entries = new Map<string, string>();
  private mtimeMs = -1;
  private checkedAt = 0;
  private readonly ok = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<boolean>>();
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    readonly path: string,
    private readonly opts: { maxConcurrent?: number; maxQueued?: number; cacheEntries?: number } = {},
  ) {
    this.reload();
  }

  /** Re-reads the file (a broken file keeps the entries it had, and says so). */
  reload(): void {
    const st = statSync(this.path);
    const text = readFileSync(this.path, 'utf8');
    this.entries = parseHtpasswd(text, this.path);
    this.mtimeMs = st.mtimeMs;
    this.ok.clear();
  }

  get users(): number {
    return this.entries.size;
  }

  private refresh(): void {
    const now = Date.now();
    if (now - this.checkedAt < 1000) return;
    this.checkedAt = now;
    try {
      if (statSync(this.path).mtimeMs !== this.mtimeMs) this.reload();
    } catch {
      /* keep what we have: the file may be mid-replacement */
    }
  }

  /** True when `password` is `user`'s. */
  async verify(user: string, password: string): Promise<boolean> {
    this.refresh();
    const hash = this.entries.get(user);
    const key = createHash('sha256').update(`${user}\0${password}\0${hash ?? ''}`).digest('base64');
    if (hash !== undefined && this.ok.has(key)) {
      this.ok.delete(key);
      this.ok.set(key, Date.now()); // most recently used last
      return true;
    }
    // Many clients logging in with the same credentials at once (a fleet of pods starting) cost one bcrypt.
    let check = this.inflight.get(key);
    if (!check) {
      check = this.limited(() => bcrypt.compare(password, (hash ?? DUMMY_HASH).replace(/^\$2y\$/, '$2b$'))).finally(() => this.inflight.delete(key));
      this.inflight.set(key, check);
    }
    const good = await check;
    if (!good || hash === undefined) return false;
    this.ok.set(key, Date.now());
    const max = this.opts.cacheEntries ?? 4096;
    while (this.ok.size > max) this.ok.delete(this.ok.keys().next().value!);
    return true;
  }

  private async limited<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= (this.opts.maxConcurrent ?? 2)) {
      if (this.waiting.length >= (this.opts.maxQueued ?? 256)) throw new SnapyardError('BUSY', 'too many password checks in progress');
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

export function parseHtpasswd(text: string, where: string): Map<string, string> {
  const out = new Map<string, string>();
  text.split(/\r?\n/).forEach((line, i) => {
    const l = line.trim();
    if (l === '' || l.startsWith('#')) return;
    const colon = l.indexOf(':');
    const user = l.slice(0, colon);
    const hash = l.slice(colon + 1);
    if (colon <= 0 || !/^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/.test(hash)) {
      throw new SnapyardError('INVALID_ARGUMENT', `${where}:${i + 1}: not a bcrypt htpasswd entry (make one with: snapyard passwd FILE USER, or htpasswd -B)`);
    }
    out.set(user, hash);
  });
  return out;
}

/** Adds or changes `user`'s entry (bcrypt, cost 10, `$2y$` as htpasswd -B writes); temp file + rename. */
export function setPassword(path: string, user: string, password: string, cost = 10): 'added' | 'changed' {
  if (!USER_RE.test(user)) throw new SnapyardError('INVALID_ARGUMENT', `user name ${JSON.stringify(user)} must be 1-255 characters without ':' or spaces`);
  if (password.length === 0) throw new SnapyardError('INVALID_ARGUMENT', 'empty password');
  const entries = existsSync(path) ? parseHtpasswd(readFileSync(path, 'utf8'), path) : new Map<string, string>();
  const had = entries.has(user);
  entries.set(user, bcrypt.hashSync(password, cost).replace(/^\$2b\$/, '$2y$'));
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, [...entries].map(([u, h]) => `${u}:${h}\n`).join(''), { mode: 0o600 });
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, path);
  return had ? 'changed' : 'added';
}

/**
 * The admin API as the page calls it, with the registry's own token flow: a
 * request answered 401 names the scope it needs in its challenge; the page
 * asks GET /token for it (with the user's Basic credentials once logged in,
 * anonymously otherwise), keeps the token per scope until it expires, and
 * repeats the request with it. Credentials stay in memory (a reload logs out).
 */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

interface Held {
  token: string;
  expires: number;
}

function challengeScope(h: string | null): string | null {
  const m = h ? /scope="([^"]*)"/.exec(h) : null;
  return m ? m[1]! : null;
}

export class Api {
  private basic: string | null = null;
  private readonly tokens = new Map<string, Held>();
  user: string | null = null;
  /** Called when who is logged in changes. */
  onChange: () => void = () => {};

  /** Checks the credentials against the token endpoint; keeps them when they work. */
  async login(user: string, password: string): Promise<void> {
    const basic = `Basic ${btoa(unescape(encodeURIComponent(`${user}:${password}`)))}`;
    const r = await fetch('/token?scope=registry%3Acatalog%3A*', { headers: { Authorization: basic } });
    if (r.status === 401) throw new ApiError(401, 'UNAUTHORIZED', 'wrong user name or password');
    if (!r.ok) throw new ApiError(r.status, 'UNKNOWN', `the token endpoint answered ${r.status}`);
    const b = (await r.json()) as { token: string; expires_in?: number };
    this.basic = basic;
    this.user = user;
    this.tokens.clear();
    this.tokens.set(CATALOG, { token: b.token, expires: Date.now() + (b.expires_in ?? 60) * 1000 });
    this.onChange();
  }

  logout(): void {
    this.basic = null;
    this.user = null;
    this.tokens.clear();
    this.onChange();
  }

  private async token(scope: string): Promise<string> {
    const held = this.tokens.get(scope);
    if (held && held.expires > Date.now() + 5000) return held.token;
    const q = scope.split(' ').map((s) => `scope=${encodeURIComponent(s)}`).join('&');
    const r = await fetch(`/token?${q}`, this.basic ? { headers: { Authorization: this.basic } } : {});
    if (!r.ok) throw new ApiError(r.status, 'UNAUTHORIZED', 'could not get a token');
    const b = (await r.json()) as { token: string; expires_in?: number };
    this.tokens.set(scope, { token: b.token, expires: Date.now() + (b.expires_in ?? 60) * 1000 });
    return b.token;
  }

  /** One admin API call; `scope` is the one it is expected to need (a token for it is sent up front). */
  async call<T>(method: string, path: string, opts: { scope?: string; body?: unknown } = {}): Promise<T> {
    const send = async (scope: string | null) => {
      const headers: Record<string, string> = { Accept: 'application/json' };
      if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
      if (scope) headers.Authorization = `Bearer ${await this.token(scope)}`;
      return fetch(path, { method, headers, ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}) });
    };
    let r = await send(opts.scope ?? null);
    if (r.status === 401) {
      const scope = challengeScope(r.headers.get('www-authenticate')) ?? opts.scope ?? '';
      await this.token(scope);
      r = await send(scope);
    }
    if (!r.ok) {
      let code = 'UNKNOWN';
      let message = `${method} ${path}: ${r.status}`;
      try {
        const e = ((await r.json()) as { errors?: Array<{ code: string; message: string }> }).errors?.[0];
        if (e) ({ code, message } = e);
      } catch {
        /* not JSON */
      }
      throw new ApiError(r.status, code, r.status === 401 ? (this.user ? `${this.user} may not do this` : 'log in to see this') : message);
    }
    return (await r.json()) as T;
  }

  get<T>(path: string, scope?: string): Promise<T> {
    return this.call<T>('GET', path, scope ? { scope } : {});
  }
}

export const repoScope = (repo: string, actions = 'pull') => `repository:${repo}:${actions}`;
export const CATALOG = 'registry:catalog:*';
export const ADMIN = 'registry:admin:*';
export const v1 = (repo: string, rest: string) => `/snapyard/v1/${repo}/${rest}`;

import { SnapyardError } from '../errors.js';

/** Who holds a session: the authenticated user, or "anonymous". */
export const ANONYMOUS = 'anonymous';

/** Seconds a client is told to wait (Retry-After) when the session caps are reached. */
export const RETRY_AFTER_SECONDS = 30;

/** One open session's place in the quota; released once (finish, cancel, expiry). */
export interface QuotaTicket {
  readonly user: string;
  release(): void;
}

/**
 * Caps on open sessions (OCI upload sessions and push sessions together), per
 * user and in total. Past a cap, `take` throws LIMIT_EXCEEDED (HTTP 429 with
 * Retry-After): sessions end when they finish, are cancelled or expire.
 */
export class SessionQuota {
  private readonly byUser = new Map<string, number>();
  private total = 0;

  constructor(private readonly perUser: number, private readonly inAll: number) {}

  take(user: string | null): QuotaTicket {
    const who = user ?? ANONYMOUS;
    const n = this.byUser.get(who) ?? 0;
    if (n >= this.perUser) {
      throw new SnapyardError('LIMIT_EXCEEDED', `${who} has ${n} open upload/push sessions (the limit is ${this.perUser}): finish or cancel some, or retry later`, {
        detail: { user: who, open: n, limit: this.perUser, retryAfter: RETRY_AFTER_SECONDS },
      });
    }
    if (this.total >= this.inAll) {
      throw new SnapyardError('LIMIT_EXCEEDED', `the registry has ${this.total} open upload/push sessions (the limit is ${this.inAll}): retry later`, {
        detail: { open: this.total, limit: this.inAll, retryAfter: RETRY_AFTER_SECONDS },
      });
    }
    this.byUser.set(who, n + 1);
    this.total++;
    let released = false;
    return {
      user: who,
      release: () => {
        if (released) return;
        released = true;
        this.total--;
        const m = (this.byUser.get(who) ?? 1) - 1;
        if (m <= 0) this.byUser.delete(who);
        else this.byUser.set(who, m);
      },
    };
  }

  /** Open sessions of a user (null: anonymous), or in all. */
  open(user?: string | null): number {
    return user === undefined ? this.total : this.byUser.get(user ?? ANONYMOUS) ?? 0;
  }
}

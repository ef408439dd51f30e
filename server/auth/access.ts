/**
 * Who may do what: the access file (`serve --access FILE`, YAML) as rules of
 * users x repository patterns x actions, and the defaults when there is none.
 * docs/auth.md has the format; a token grants the intersection of what was
 * asked and what this policy allows (distribution's token spec).
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { SnapyardError } from '../../storage/errors.js';

export const REPO_ACTIONS = ['pull', 'push', 'delete'] as const;
export type RepoAction = (typeof REPO_ACTIONS)[number];
export type RuleAction = RepoAction | 'admin';

/** The name an access rule uses for a caller without credentials. */
export const ANONYMOUS = 'anonymous';

/** What one request (or one token scope) is about, as in `repository:win98:pull,push` or `registry:catalog:*`. */
export type Resource =
  | { type: 'repository'; name: string; actions: RepoAction[] }
  | { type: 'registry'; name: 'catalog' | 'admin'; actions: ['*'] };

const ruleSchema = z.object({
  users: z.array(z.string().min(1)).min(1),
  repositories: z.array(z.string().min(1)).min(1),
  actions: z.array(z.enum(['pull', 'push', 'delete', 'admin'])).min(1),
}).strict();

const fileSchema = z.object({ rules: z.array(ruleSchema) }).strict();

interface Rule {
  users: Set<string>;
  patterns: RegExp[];
  anyRepo: boolean;
  actions: Set<RuleAction>;
}

/** `*` matches any run of characters, `/` included; everything else is literal. */
export function patternToRegExp(p: string): RegExp {
  return new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*')}$`);
}

export interface AccessPolicyOptions {
  /** Rules from the access file; absent: every authenticated user may do everything, anonymous callers nothing. */
  rules?: z.infer<typeof ruleSchema>[];
  /** Anonymous callers may pull every repository (`--anonymous-pull`). */
  anonymousPull?: boolean;
}

export class AccessPolicy {
  private readonly rules: Rule[] | null;
  private readonly anonymousPull: boolean;

  constructor(opts: AccessPolicyOptions = {}) {
    this.anonymousPull = opts.anonymousPull === true;
    this.rules = opts.rules
      ? opts.rules.map((r) => ({
          users: new Set(r.users),
          patterns: r.repositories.map(patternToRegExp),
          anyRepo: r.repositories.includes('*'),
          actions: new Set(r.actions),
        }))
      : null;
  }

  /** Reads and checks an access file; a bad file is a clear error naming what is wrong. */
  static fromFile(path: string, opts: { anonymousPull?: boolean } = {}): AccessPolicy {
    let doc: unknown;
    try {
      doc = parseYaml(readFileSync(path, 'utf8'));
    } catch (e) {
      throw new SnapyardError('INVALID_ARGUMENT', `access file ${path}: ${(e as Error).message}`);
    }
    const r = fileSchema.safeParse(doc);
    if (!r.success) {
      const what = r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
      throw new SnapyardError('INVALID_ARGUMENT', `access file ${path}: ${what}`);
    }
    return new AccessPolicy({ rules: r.data.rules, ...(opts.anonymousPull !== undefined ? { anonymousPull: opts.anonymousPull } : {}) });
  }

  /** The actions `user` (null: anonymous) may take on repository `repo`. */
  repoActions(user: string | null, repo: string): Set<RepoAction> {
    const out = new Set<RepoAction>();
    if (user === null && this.anonymousPull) out.add('pull');
    if (this.rules === null) {
      if (user !== null) for (const a of REPO_ACTIONS) out.add(a);
      return out;
    }
    // A user who logged in may do at least what an anonymous caller may.
    const who = user === null ? [ANONYMOUS] : [user, ANONYMOUS];
    for (const rule of this.rules) {
      if (!who.some((w) => rule.users.has(w)) || !rule.patterns.some((p) => p.test(repo))) continue;
      for (const a of rule.actions) if (a !== 'admin') out.add(a);
    }
    return out;
  }

  /** Registry-wide admin (gc, verify, registry stats): a rule with `admin` over every repository (`*`). */
  isAdmin(user: string | null): boolean {
    if (this.rules === null) return user !== null;
    const who = user ?? ANONYMOUS;
    return this.rules.some((r) => r.users.has(who) && r.anyRepo && r.actions.has('admin'));
  }

  /** The part of `asked` this policy grants `user` (scope intersection); null when nothing is granted. */
  grant(user: string | null, asked: Resource): Resource | null {
    if (asked.type === 'registry') {
      if (asked.name === 'admin') return this.isAdmin(user) ? asked : null;
      // The catalog is open to anyone who may pull something; it lists only what the caller may pull.
      return user !== null || this.anonymousPull || this.rules?.some((r) => r.users.has(ANONYMOUS)) ? asked : null;
    }
    const allowed = this.repoActions(user, asked.name);
    const actions = asked.actions.filter((a) => allowed.has(a));
    return actions.length > 0 ? { type: 'repository', name: asked.name, actions } : null;
  }
}

/** Parses `repository:win98:pull,push` / `registry:catalog:*` (null when it is not a scope we know). */
export function parseScope(s: string): Resource | null {
  const first = s.indexOf(':');
  const last = s.lastIndexOf(':');
  if (first < 0 || last === first) return null;
  const type = s.slice(0, first);
  const name = s.slice(first + 1, last);
  const actions = s.slice(last + 1).split(',').filter((a) => a !== '');
  if (type === 'registry' && (name === 'catalog' || name === 'admin') && actions.includes('*')) return { type, name, actions: ['*'] };
  if (type !== 'repository') return null;
  const repoActions = [...new Set(actions.filter((a): a is RepoAction => (REPO_ACTIONS as readonly string[]).includes(a)))];
  if (actions.includes('*')) repoActions.splice(0, repoActions.length, ...REPO_ACTIONS);
  return repoActions.length > 0 ? { type, name, actions: repoActions } : null;
}

export function formatScope(r: Resource): string {
  return `${r.type}:${r.name}:${r.actions.join(',')}`;
}

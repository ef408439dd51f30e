/**
 * Other digests of stored content: a blob or manifest is stored and named by
 * its sha256, and is known by every digest it was pushed under (sha512, as
 * the distribution-spec allows). One row per alias in meta.db:
 *   digest_aliases(alias TEXT PRIMARY KEY, digest TEXT)   alias -> sha256
 * The mapping is a fact about content (sha512(x) names the same bytes as
 * sha256(x)), so rows are never changed; a row whose content is gone
 * resolves to a digest that nothing holds (404 as for any unknown digest).
 * It is written before the blob or manifest it names is committed, so a
 * committed object is always reachable by the alias it was pushed under.
 */
import type Database from 'better-sqlite3';
import type { AnyDigest, Digest, Sha512Digest } from '../digest.js';

export class DigestAliases {
  private readonly insert: Database.Statement;
  private readonly lookup: Database.Statement;

  constructor(db: Database.Database) {
    db.exec('CREATE TABLE IF NOT EXISTS digest_aliases (alias TEXT PRIMARY KEY, digest TEXT NOT NULL) WITHOUT ROWID');
    this.insert = db.prepare('INSERT OR IGNORE INTO digest_aliases (alias, digest) VALUES (?, ?)');
    this.lookup = db.prepare('SELECT digest FROM digest_aliases WHERE alias = ?').pluck();
  }

  /** Records that `alias` names the content stored as `canonical`. */
  add(alias: Sha512Digest, canonical: Digest): void {
    this.insert.run(alias, canonical);
  }

  /** The sha256 a digest names: itself for a sha256, the recorded one for an alias, null when unknown. */
  resolve(d: AnyDigest): Digest | null {
    if (d.startsWith('sha256:')) return d as Digest;
    return (this.lookup.get(d) as Digest | undefined) ?? null;
  }
}

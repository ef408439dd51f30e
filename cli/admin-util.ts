/** Shared by the lifecycle commands: an admin client for --registry, and output helpers. */
import { AdminClient } from '../client/admin.js';
import { SnapyardError } from '../storage/errors.js';
import { parseRef, type Ref } from '../client/ref.js';
import { withRegistry, type RegistryFlags } from './registry-options.js';

/** Runs `fn` with an admin client for the registry (closed afterwards). */
export function withAdmin<T>(o: RegistryFlags, fn: (a: AdminClient) => Promise<T>): Promise<T> {
  return withRegistry(o, (reg) => fn(new AdminClient(reg)));
}

/** A `repo:tag` reference (a digest is not accepted here). */
export function tagRef(s: string): Ref & { tag: string } {
  const ref = parseRef(s);
  if (ref.tag === undefined) throw new SnapyardError('INVALID_ARGUMENT', `${JSON.stringify(s)}: expected repo:tag`);
  return ref as Ref & { tag: string };
}

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v)}\n`);
}

export function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** 1234567 -> "1.23 MB" (decimal units). */
export function human(n: number | null): string {
  if (n === null) return '-';
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = -1;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return `${v.toFixed(2)} ${units[u]}`;
}

/** sha256:<64 hex> -> sha256:<12 hex> (for tables). */
export function short(d: string | null): string {
  return d === null ? '-' : d.slice(0, 'sha256:'.length + 12);
}

/** Rows as left-aligned columns. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

export function wholeNumber(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new SnapyardError('INVALID_ARGUMENT', `${name} must be a whole number`);
    return Number(v);
  };
}

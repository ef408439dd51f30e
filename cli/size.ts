import { SnapyardError } from '../storage/errors.js';

/**
 * "64G", "512M", "1.5T", "4096" -> bytes (binary units). On its own (not in
 * serve-options.ts, which loads the YAML parser): `snapyard mount` takes
 * sizes, and its first read waits for what it loads.
 */
export function parseSize(v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$/i.exec(v.trim());
  if (!m) throw new SnapyardError('INVALID_ARGUMENT', `${JSON.stringify(v)} is not a size (like 512M, 64G)`);
  const unit = (m[2] ?? 'B').toUpperCase()[0]!;
  const mult = { B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }[unit] ?? 1;
  return Math.floor(Number(m[1]) * mult);
}

/** How the CLI reports a failure: one `snapyard:` line and an exit code, never a stack trace (SNAPYARD_DEBUG=1 adds it). */
import { isSnapyardError } from '../storage/errors.js';
import { networkError } from '../client/registry.js';

const FILE_CODES = new Set(['ENOENT', 'EACCES', 'EISDIR', 'ENOTDIR', 'EEXIST', 'ENOSPC', 'EROFS', 'EPERM', 'EMFILE']);

export function describeError(e: unknown): { line: string; exitCode: number } {
  const mapped = networkError(e, 'the registry');
  if (isSnapyardError(mapped)) return { line: `${mapped.code}: ${mapped.message}`, exitCode: 2 };
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && FILE_CODES.has(err.code)) return { line: err.message, exitCode: 2 };
  if (err && typeof err.code === 'string' && err.code.startsWith('EPIPE')) return { line: 'output closed (EPIPE)', exitCode: 1 };
  const msg = e instanceof Error ? e.message : String(e);
  return { line: `unexpected error: ${msg.split('\n')[0]}`, exitCode: 1 };
}

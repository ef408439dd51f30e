/** `snapyard passwd FILE USER`: adds or changes a user's bcrypt entry, the password read from standard input. */
import { setPassword } from '../server/auth/htpasswd.js';
import { SnapyardError } from '../storage/errors.js';

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const p of process.stdin) parts.push(p as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

export async function passwdCommand(file: string, user: string): Promise<void> {
  if (process.stdin.isTTY) process.stderr.write(`password for ${user} (then Enter and Ctrl-D): `);
  const raw = await readStdin();
  const password = raw.replace(/\r?\n$/, '');
  if (password.includes('\n')) throw new SnapyardError('INVALID_ARGUMENT', 'the password is one line of standard input');
  const what = setPassword(file, user, password);
  process.stdout.write(`${what} ${user} in ${file}\n`);
}

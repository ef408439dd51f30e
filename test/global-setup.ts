import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';

/** Tests that spawn `bin/snapyard.js` run the compiled dist/: build it fresh first. */
export default function setup(): void {
  const root = resolve(import.meta.dirname, '..');
  execFileSync(process.execPath, [resolve(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
}

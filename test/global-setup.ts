import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

/**
 * Tests that spawn `bin/snapyard.js` run the compiled dist/: build it fresh
 * first. Type errors are reported (the test command runs `tsc --noEmit`
 * before vitest and fails on them) but still emit, so a single test file can
 * run while other work is in progress; only a failure to emit stops here.
 */
export default function setup(): void {
  const root = resolve(import.meta.dirname, '..');
  const r = spawnSync(process.execPath, [resolve(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0 && r.status !== 2) throw new Error(`tsc -p tsconfig.build.json failed (exit ${r.status ?? r.signal})`);
  // The web page (dist/ui), served by `snapyard serve` (test/ui.test.ts).
  const ui = spawnSync(process.execPath, [resolve(root, 'scripts', 'build-ui.mjs')], { cwd: root, stdio: 'inherit', env: { ...process.env, BUILD_UI_QUIET: '1' } });
  if (ui.status !== 0) throw new Error(`scripts/build-ui.mjs failed (exit ${ui.status ?? ui.signal})`);
}

#!/usr/bin/env node
// The `snapyard` command. Runs the compiled JavaScript in dist/ (`npm run build`,
// done by `npm ci` and by scripts/serve.sh and scripts/test.sh); without dist/,
// or with SNAPYARD_FROM_SOURCE=1, it runs the TypeScript sources through tsx.
import { existsSync } from 'node:fs';

const dist = new URL('../dist/cli/main.js', import.meta.url);
let cli;
if (process.env.SNAPYARD_FROM_SOURCE !== '1' && existsSync(dist)) {
  cli = await import(dist.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import('../cli/main.ts');
}
await cli.main(process.argv);

#!/usr/bin/env node
// Builds the web page (ui/, docs/ui.md) into dist/ui/: one minified JS and one
// CSS bundle with content-hashed names under assets/, an index.html that
// references them, and a .gz and .br of each text file, precomputed here so the
// server only picks the encoding. Run by `npm run build`, the test setup and the
// Dockerfile. Prints the page weight (all assets, compressed).
import { build } from 'esbuild';
import { brotliCompressSync, constants, gzipSync } from 'node:zlib';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'ui');
const tmp = `${out}.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
mkdirSync(join(tmp, 'assets'), { recursive: true });

const r = await build({
  entryPoints: [join(root, 'ui', 'main.tsx')],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  entryNames: '[name]-[hash]',
  outdir: join(tmp, 'assets'),
  metafile: true,
  legalComments: 'none',
  logLevel: 'warning',
});
const files = Object.keys(r.metafile.outputs).map((p) => basename(p));
const js = files.find((f) => f.endsWith('.js'));
const css = files.find((f) => f.endsWith('.css'));
if (!js || !css) throw new Error(`build-ui: expected one .js and one .css, got ${files.join(', ')}`);
const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>snapyard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/assets/${css}">
<script type="module" src="/ui/assets/${js}"></script>
</head>
<body><div id="app"></div></body>
</html>
`;
writeFileSync(join(tmp, 'index.html'), html);
let weight = 0;
for (const f of ['index.html', `assets/${js}`, `assets/${css}`]) {
  const body = readFileSync(join(tmp, f));
  const gz = gzipSync(body, { level: 9 });
  writeFileSync(join(tmp, `${f}.gz`), gz);
  writeFileSync(join(tmp, `${f}.br`), brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }));
  weight += gz.length;
}
// Replace the old build in one step: a server reading dist/ui never sees half of it.
rmSync(`${out}.old`, { recursive: true, force: true });
try {
  renameSync(out, `${out}.old`);
} catch {}
renameSync(tmp, out);
rmSync(`${out}.old`, { recursive: true, force: true });
if (!process.env.BUILD_UI_QUIET) console.log(`ui: dist/ui (${js}, ${css}); page weight ${(weight / 1024).toFixed(1)} KiB gzip`);

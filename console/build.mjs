#!/usr/bin/env node
// Builds the admin console into console/dist (served by courier-server at /admin):
// type-checks src/ against the SDK's published declarations, bundles src/main.tsx with
// esbuild (React and `courier-client` from the npm package's own node_modules and dist/, so
// the console needs no install of its own), and copies the page, the styles and the SDK's
// WebAssembly next to the bundle (the SDK loads it from `./wasm/` beside its module).
// Run by `make console` after `make npm-build`.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const npm = join(here, '..', 'npm');
if (!existsSync(join(npm, 'dist', 'web.js')) || !existsSync(join(npm, 'node_modules', 'esbuild'))) {
  console.error('npm/dist or npm/node_modules is missing: run `make npm-build` at the repository root');
  process.exit(1);
}
// `courier-client` resolves to the package as an application gets it (its `exports`).
const link = join(here, 'node_modules', 'courier-client');
if (!existsSync(link)) {
  mkdirSync(dirname(link), { recursive: true });
  symlinkSync(join('..', '..', 'npm'), link, 'dir');
}

execFileSync(process.execPath, [join(npm, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(here, 'tsconfig.json')], { stdio: 'inherit' });

const esbuild = (await import(join(npm, 'node_modules', 'esbuild', 'lib', 'main.js'))).default;
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
await esbuild.build({
  entryPoints: [join(here, 'src', 'main.tsx')],
  outfile: join(dist, 'assets', 'console.js'),
  bundle: true,
  format: 'esm',
  target: 'es2022',
  platform: 'browser',
  minify: true,
  sourcemap: true,
  jsx: 'automatic',
  nodePaths: [join(npm, 'node_modules')],
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
});
cpSync(join(here, 'src', 'console.css'), join(dist, 'assets', 'console.css'));
cpSync(join(npm, 'dist', 'wasm', 'courier_wasm_bg.wasm'), join(dist, 'assets', 'wasm', 'courier_wasm_bg.wasm'));
cpSync(join(here, 'index.html'), join(dist, 'index.html'));
console.log(`built ${dist} (served by courier-server at /admin)`);

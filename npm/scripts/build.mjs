#!/usr/bin/env node
// Builds the package from the wasm-pack output in pkg/ (run wasm-pack first: `make npm-build`
// at the repository root does both): copies the glue into src/wasm/ for the compiler,
// compiles TypeScript into dist/, copies the glue and the .wasm into dist/wasm/, strips the
// comments from the shipped JavaScript, and fails
// if a public declaration file still says `any`.
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = join(here, 'pkg');
if (!existsSync(join(pkg, 'courier_wasm_bg.wasm'))) {
  console.error('npm/pkg/ is missing: run `make npm-build` at the repository root (wasm-pack)');
  process.exit(1);
}
if (!existsSync(join(here, 'pkg-sub', 'courier_wasm_bg.wasm'))) {
  console.error('npm/pkg-sub/ is missing: run `make npm-build` at the repository root (wasm-pack, subscriber build)');
  process.exit(1);
}
// The two builds of the WASM: the full client (pkg/ -> wasm/) and the subscriber entry's,
// without the publish queue (pkg-sub/ -> wasm-sub/).
const builds = [
  [pkg, 'wasm'],
  [join(here, 'pkg-sub'), 'wasm-sub'],
];
const glue = ['courier_wasm.js', 'courier_wasm.d.ts', 'courier_wasm_bg.wasm', 'courier_wasm_bg.wasm.d.ts'];
for (const [from, to] of builds) {
  mkdirSync(join(here, 'src', to), { recursive: true });
  for (const f of glue) cpSync(join(from, f), join(here, 'src', to, f));
}

rmSync(join(here, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(here, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(here, 'tsconfig.json')], {
  stdio: 'inherit',
});
for (const [from, to] of builds) {
  mkdirSync(join(here, 'dist', to), { recursive: true });
  for (const f of glue) cpSync(join(from, f), join(here, 'dist', to, f));
}

// The shipped JavaScript carries no comments (the documentation is in the .d.ts files and
// the README): TypeScript reprints each file with `removeComments`, semantics unchanged.
const ts = (await import('typescript')).default;
for (const dir of [join(here, 'dist'), join(here, 'dist', 'wasm'), join(here, 'dist', 'wasm-sub')]) {
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.js')) continue;
    const code = readFileSync(join(dir, f), 'utf8');
    const out = ts.transpileModule(code, {
      fileName: f,
      compilerOptions: { removeComments: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
    }).outputText;
    writeFileSync(join(dir, f), out);
  }
}

// No `any` reaches the user: the public declarations must not contain one.
const offenders = [];
// (Every entry point's declarations are here, `subscriber-*.d.ts` included; the glue's own
// `wasm*/courier_wasm.d.ts` types raw WASM exports and is not re-exported.)
for (const f of readdirSync(join(here, 'dist'))) {
  if (!f.endsWith('.d.ts')) continue;
  const text = readFileSync(join(here, 'dist', f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
  if (/\bany\b/.test(text)) offenders.push(f);
}
if (offenders.length) {
  console.error(`public declarations contain \`any\`: ${offenders.join(', ')}`);
  process.exit(1);
}
console.log('built npm/dist');

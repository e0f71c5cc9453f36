// Types: the generated event types match the Rust types (drift check), the public
// declarations compile against real usage (typed handlers type-check, typos do not), and no
// `any` reaches the user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, mkdirSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NPM_DIR } from './helpers.mjs';

test('src/events.generated.ts is what the Rust types generate (drift check)', () => {
  const out = execFileSync(process.execPath, [join(NPM_DIR, 'scripts', 'gen-types.mjs'), '--check'], { encoding: 'utf8' });
  assert.match(out, /up to date/);
});

test('typed handlers type-check against the published declarations; typos do not', () => {
  // A project that depends on the package by name (node_modules/courier-client -> npm/).
  const dir = mkdtempSync(join(tmpdir(), 'courier-types-'));
  try {
    mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true });
    symlinkSync(NPM_DIR, join(dir, 'node_modules', 'courier-client'));
    symlinkSync(join(NPM_DIR, 'node_modules', 'react'), join(dir, 'node_modules', 'react'));
    symlinkSync(join(NPM_DIR, 'node_modules', '@types', 'react'), join(dir, 'node_modules', '@types', 'react'));
    cpSync(join(NPM_DIR, 'test', 'types', 'usage.ts'), join(dir, 'usage.ts'));
    cpSync(join(NPM_DIR, 'test', 'types', 'tsconfig.json'), join(dir, 'tsconfig.json'));
    const tsc = join(NPM_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
    try {
      execFileSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8', stdio: 'pipe' });
    } catch (e) {
      assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('no `any` in the public declarations', () => {
  for (const f of readdirSync(join(NPM_DIR, 'dist')).filter((f) => f.endsWith('.d.ts'))) {
    const text = readFileSync(join(NPM_DIR, 'dist', f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
    assert.doesNotMatch(text, /\bany\b/, f);
  }
});

// The shared vectors (tests/vectors/*.json) through WebAssembly: every case of every file is
// recomputed by the core and must equal the case as written. The shipped WASM does not carry
// the vector evaluator (it does carry the catalogue validation: test/validation.test.mjs), so
// this runs the test-only build in npm/pkg-test (`--features conformance`, built by
// `make npm-build`), compiled from the same core sources.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, NPM_DIR } from './helpers.mjs';

const pkg = join(NPM_DIR, 'pkg-test');
const { initSync, evaluateVector, vectorFiles, statsFieldNames } = await import(join(pkg, 'courier_wasm.js'));
initSync({ module: readFileSync(join(pkg, 'courier_wasm_bg.wasm')) });

test('the shipped WASM does not carry the vector evaluator', async () => {
  const shipped = await import('../dist/wasm/courier_wasm.js');
  assert.equal(shipped.evaluateVector, undefined);
});

test('stats() carries exactly the names of the core\'s ClientStats (serde)', async () => {
  const { CourierClient } = await import('../dist/node.js');
  const c = new CourierClient({ url: 'http://127.0.0.1:9', token: 't' });
  try {
    const names = [...statsFieldNames()].sort();
    assert.ok(names.length > 10);
    assert.deepEqual(Object.keys(c.stats()).sort(), names);
  } finally {
    c.close();
  }
});

const dir = join(ROOT, 'tests', 'vectors');
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).map((f) => f.slice(0, -5)).sort();

test('every vector file is understood by the core', () => {
  assert.deepEqual(files, [...vectorFiles()].sort());
});

for (const file of files) {
  const { cases } = JSON.parse(readFileSync(join(dir, `${file}.json`), 'utf8'));
  test(`vectors: ${file} (${cases.length} cases)`, () => {
    assert.ok(cases.length > 0);
    for (const c of cases) {
      const answer = JSON.parse(evaluateVector(file, JSON.stringify(c)));
      assert.deepEqual(answer, c, `${file}: ${c.name ?? JSON.stringify(c).slice(0, 80)}`);
    }
  });
}

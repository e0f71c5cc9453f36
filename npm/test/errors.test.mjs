// The error classes against tests/vectors/errors.json: every code the core reports maps to
// the class the file lists (the category and `retryable` are the core's, checked by the
// conformance runner), and the class tree has the file's names and parents — the same names
// as in Python. Runs on the built package (dist/), no server needed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as pkg from '../dist/node.js';
import { errorFromCore } from '../dist/errors.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { cases, classes } = JSON.parse(readFileSync(join(ROOT, 'tests', 'vectors', 'errors.json'), 'utf8'));

test('every code the core reports becomes the class errors.json lists', () => {
  assert.ok(cases.length > 15);
  for (const c of cases) {
    const e = errorFromCore({ code: c.code, category: c.category, retryable: c.retryable, message: 'm', retry_after_ms: 1500, status: 429 });
    assert.equal(e.constructor.name, c.typescript, c.code);
    assert.equal(e.name, c.typescript, c.code);
    assert.deepEqual([e.code, e.category, e.retryable, e.retryAfterMs, e.status], [c.code, c.category, c.retryable, 1500, 429], c.code);
    assert.ok(e instanceof pkg.CourierError && e instanceof Error, c.code);
  }
});

test('the class tree has the names and parents errors.json lists', () => {
  for (const spec of classes) {
    const Class = pkg[spec.name];
    assert.equal(typeof Class, 'function', `${spec.name} is exported`);
    assert.equal(Class.name, spec.name);
    assert.equal(Object.getPrototypeOf(Class).name, spec.parent ?? 'Error', spec.name);
    // Built without the core, a class still says which category it stands for.
    assert.equal(new Class('X', 'm').category, spec.category, spec.name);
  }
});

test('every exported error class is in errors.json (the old names are aliases)', () => {
  const names = new Set(classes.map((c) => c.name));
  const aliases = { AuthError: 'AuthenticationError', RateLimitError: 'RateLimitedError', ConnectionError: 'CourierConnectionError' };
  for (const [name, value] of Object.entries(pkg)) {
    if (!name.endsWith('Error')) continue;
    if (name in aliases) assert.equal(value, pkg[aliases[name]], name);
    else assert.ok(names.has(name), `${name} is not in errors.json`);
  }
});

test('a category this version does not know falls back to CourierError', () => {
  const e = errorFromCore({ code: 'SOMETHING_NEW', category: 'something_new', message: 'm' });
  assert.equal(e.constructor, pkg.CourierError);
  const limit = errorFromCore({ code: 'CONNECTION_LIMIT_EXCEEDED', category: 'rate_limited', retryable: false, message: 'm', limit_type: 'user' });
  assert.ok(limit instanceof pkg.RateLimitedError && limit.limitType === 'user' && limit.retryAfterMs === undefined);
});

// Packaging: `npm pack`, install the tarball into a fresh project, and run a script that
// imports it by name and talks to the real server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NPM_DIR, startServer, token } from './helpers.mjs';

let server;
let dir;
before(async () => {
  server = await startServer();
  dir = mkdtempSync(join(tmpdir(), 'courier-pack-'));
});
after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const npm = (args, cwd) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, encoding: 'utf8' });

test('the packed tarball installs into a fresh project and works by name', () => {
  npm(['pack', '--pack-destination', dir], NPM_DIR);
  const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'));
  assert.ok(tarball, 'npm pack wrote a tarball');
  const listing = execFileSync('tar', ['-tzf', join(dir, tarball)], { encoding: 'utf8' });
  for (const f of ['package/dist/node.js', 'package/dist/web.js', 'package/dist/react.js', 'package/dist/index.d.ts', 'package/dist/wasm/courier_wasm_bg.wasm',
    'package/dist/subscriber-node.js', 'package/dist/subscriber-web.js', 'package/dist/subscriber-web.d.ts', 'package/dist/wasm-sub/courier_wasm_bg.wasm', 'package/README.md']) {
    assert.ok(listing.includes(f), `${f} is packed`);
  }
  assert.ok(!listing.includes('package/src/'), 'sources are not packed');

  const project = join(dir, 'app');
  execFileSync('mkdir', ['-p', project]);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  const wsVersion = JSON.parse(execFileSync('node', ['-p', 'JSON.stringify(require("ws/package.json").version)'], { cwd: NPM_DIR, encoding: 'utf8' }));
  npm(['install', '--prefer-offline', join(dir, tarball), `ws@${wsVersion}`], project);
  writeFileSync(
    join(project, 'main.js'),
    `import { CourierClient, CourierError } from 'courier-client';
import { CourierClient as SubscriberClient } from 'courier-client/subscriber';
const url = process.argv[2];
const sub = new SubscriberClient({ url, token: process.argv[3] });
const pub = new CourierClient({ url, token: process.argv[4] });
const got = new Promise((resolve) => sub.subscribe('backtest.pack', (e) => resolve(e)));
sub.connect();
await new Promise((r) => { const t = setInterval(() => { if (sub.state === 'connected') { clearInterval(t); r(); } }, 10); });
await new Promise((r) => setTimeout(r, 50));
await pub.publish('backtest.pack', 'backtest.progress', { backtest_id: 'pack', percent: 99 });
const e = await got;
console.log(JSON.stringify({ type: e.type, percent: e.data.percent, errorIsClass: typeof CourierError === 'function',
  subscriberCanPublish: typeof sub.publish === 'function', subscriber: import.meta.resolve('courier-client/subscriber'),
  web: import.meta.resolve('courier-client/web'), react: import.meta.resolve('courier-client/react') }));
sub.close(); pub.close();
`,
  );
  const out = execFileSync(
    'node',
    ['main.js', server.wsUrl, token({ channels: ['backtest.*'] }), token({ sub: 'svc', role: 'service' })],
    { cwd: project, encoding: 'utf8', timeout: 20_000 },
  );
  const result = JSON.parse(out.trim().split('\n').pop());
  assert.equal(result.type, 'backtest.progress');
  assert.equal(result.percent, 99);
  assert.equal(result.errorIsClass, true);
  assert.equal(result.subscriberCanPublish, false);
  assert.match(result.subscriber, /node_modules\/courier-client\/dist\/subscriber-node\.js$/);
  assert.match(result.web, /node_modules\/courier-client\/dist\/web\.js$/);
  assert.match(result.react, /node_modules\/courier-client\/dist\/react\.js$/);
});

// A real browser: headless Chromium (Debian's, driven by playwright-core) loads a page that
// uses the `web` build on the page and in a module worker, receives events published from
// another process, survives a forced drop, and saves a screenshot.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { extname, join, normalize } from 'node:path';
import { chromium } from 'playwright-core';
import { NPM_DIR, ROOT, startServer, token, fault, until } from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.ts': 'text/plain' };
let server;
let web;
let browser;

before(async () => {
  server = await startServer();
  // Static files: /dist/* and /test/browser/* from npm/, with application/wasm for .wasm.
  web = createServer((req, res) => {
    const path = normalize(new URL(req.url, 'http://x').pathname);
    const file = join(NPM_DIR, path === '/' ? 'test/browser/index.html' : path);
    if (!file.startsWith(NPM_DIR) || !existsSync(file) || !(path.startsWith('/dist/') || path.startsWith('/test/browser/') || path === '/')) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  await new Promise((r) => web.listen(0, '127.0.0.1', r));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  web?.close();
  await server?.stop();
});

/** Publishes from a separate Node process through the Node build. */
function publishFromAnotherProcess(from, to) {
  const script = `
    import { CourierClient } from ${JSON.stringify(join(NPM_DIR, 'dist', 'node.js'))};
    const pub = new CourierClient({ url: process.argv[1], token: process.argv[2] });
    for (let i = ${from}; i <= ${to}; i++) await pub.publish('backtest.browser', 'backtest.progress', { backtest_id: 'browser', percent: (i * 10) % 100 });
    pub.close();`;
  execFileSync(process.execPath, ['--input-type=module', '-e', script, server.wsUrl, token({ sub: 'svc', role: 'service' })], { timeout: 20_000 });
}

for (const entry of ['web', 'subscriber']) {
test(`the ${entry} build in Chromium (page and worker): live events, a forced drop, a screenshot`, async () => {
  const page = await browser.newPage({ viewport: { width: 720, height: 520 } });
  const logs = [];
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  const q = new URLSearchParams({ ws: server.wsUrl, token: token({ sub: 'viewer', channels: ['backtest.*'] }), entry });
  const web_addr = web.address();
  await page.goto(`http://127.0.0.1:${web_addr.port}/?${q}`);
  const read = () => page.evaluate(() => ({ page: window.__events, worker: window.__workerEvents, states: window.__states, worker_state: document.getElementById('worker').textContent }));
  await until(async () => {
    const s = await read();
    return s.states?.includes('connected') && s.worker_state === 'connected';
  }, { what: `page and worker connected (${logs.join(' | ')})` });
  await new Promise((r) => setTimeout(r, 100));

  const base = entry === 'web' ? 0 : 10; // the second run continues the channel
  publishFromAnotherProcess(base + 1, base + 5);
  await until(async () => {
    const s = await read();
    return s.page.length === 5 && s.worker.length === 5;
  }, { what: 'first five events' });

  await fault(server, 'drop');
  await until(async () => (await page.evaluate(() => window.__client.stats().reconnects)) >= 1, { what: 'reconnect after the drop' });
  // A browser exposes no byte counts of its sockets: null, not a made-up number.
  assert.deepEqual(await page.evaluate(() => [window.__client.stats().wire_bytes_received, window.__client.stats().wire_bytes_sent]), [null, null]);
  await until(async () => (await read()).worker_state === 'connected', { what: 'worker reconnected' });
  await new Promise((r) => setTimeout(r, 100));
  publishFromAnotherProcess(base + 6, base + 10);
  await until(async () => {
    const s = await read();
    return s.page.length >= 10 && s.worker.length >= 10;
  }, { what: 'ten events' });
  await new Promise((r) => setTimeout(r, 100));
  const s = await read();
  const expected = Array.from({ length: 10 }, (_, i) => base + i + 1);
  assert.deepEqual(s.page, expected);
  assert.deepEqual(s.worker, expected);
  assert.ok(s.states.filter((x) => x === 'connected').length >= 2, 'connected again after the drop');

  mkdirSync(join(ROOT, 'tests', 'artifacts'), { recursive: true });
  const shot = join(ROOT, 'tests', 'artifacts', entry === 'web' ? 'npm-browser.png' : 'npm-browser-subscriber.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(existsSync(shot));
  assert.equal(logs.filter((l) => /error/i.test(l)).length, 0, logs.join('\n'));
  await page.close();
});
}

// The admin console in headless Chromium (Debian's, driven by playwright-core) against the
// real reference server at its default settings (rate limits on), serving the built console
// at /admin: a non-admin token is refused, an admin logs in, sees a connection appear, tails
// a channel (filter, pause), publishes an invalid `backtest.progress` and sees the field
// error, pages the history, and sees the channel's rate and a rate-limit refusal.
// Screenshots go to tests/artifacts/console-*.png.
//
//   node --test console/test/console.test.mjs   (after `make console`)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { NPM_DIR, ROOT, startServer, token, until } from '../../npm/test/helpers.mjs';

const { chromium } = createRequire(join(NPM_DIR, 'package.json'))('playwright-core');
const { CourierClient } = await import(join(NPM_DIR, 'dist', 'node.js'));

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const DIST = join(ROOT, 'console', 'dist');
const ARTIFACTS = join(ROOT, 'tests', 'artifacts');
const CHANNEL = 'backtest.console';
// Each wait in the page: the console polls the admin API every second.
const WAIT = { timeout: 15_000 };

let server;
let browser;
let page;
const clients = [];
const admin = token({ sub: 'ops', role: 'admin' });
const service = token({ sub: 'svc', role: 'service' });

function client(options) {
  const c = new CourierClient({ url: server.wsUrl, ...options });
  clients.push(c);
  return c;
}

async function adminApi(path) {
  const r = await fetch(`${server.httpUrl}${path}`, { headers: { authorization: `Bearer ${admin}` } });
  assert.equal(r.status, 200, path);
  return r.json();
}

async function publish(type, data, tok = service, channel = CHANNEL) {
  const r = await fetch(`${server.httpUrl}/publish/${channel}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type, data }),
  });
  return { status: r.status, body: await r.json() };
}

const shot = (name) => page.screenshot({ path: join(ARTIFACTS, `console-${name}.png`), fullPage: true });

before(async () => {
  assert.ok(existsSync(join(DIST, 'index.html')), 'console/dist is missing: run `make console`');
  mkdirSync(ARTIFACTS, { recursive: true });
  server = await startServer({ env: { COURIER_ADMIN__CONSOLE_DIR: DIST } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.on('pageerror', (e) => console.error('page error:', e));
});

after(async () => {
  for (const c of clients) c.close();
  await browser?.close();
  await server?.stop();
});

test('a non-admin token is refused, with the reason', async () => {
  await page.goto(`${server.httpUrl}/admin`);
  for (const [tok, reason] of [
    [token({ sub: 'u1' }), /not an admin token/],
    [service, /not an admin token/],
    ['not-a-jwt', /refused this token/],
  ]) {
    await page.fill('#token', tok);
    await page.click('[data-testid=login] button[type=submit]');
    await page.waitForSelector('[data-testid=login-error]', WAIT);
    assert.match(await page.textContent('[data-testid=login-error]'), reason);
  }
  await shot('refused');
  // Still on the login form: nothing else rendered.
  assert.equal(await page.locator('[data-testid=nav-connections]').count(), 0);
});

test('an admin logs in and sees a connection appear with its client name', async () => {
  await page.fill('#token', admin);
  await page.click('[data-testid=login] button[type=submit]');
  // The console's own client connects (as `ops`, named courier-admin-console).
  await page.waitForSelector('[data-testid=connections] tr[data-user=ops]', WAIT);
  assert.match(await page.textContent('[data-testid=connections] tr[data-user=ops]'), /courier-admin-console\/0\.1\.0/);
  assert.equal(await page.locator('[data-testid=connections] tr[data-user=watcher]').count(), 0);
  const watcher = client({ token: token({ sub: 'watcher' }), clientName: 'test-watcher/1.0' });
  await watcher.subscribe('global', () => {}).ready;
  const row = page.locator('[data-testid=connections] tr[data-user=watcher]');
  await row.waitFor(WAIT);
  await until(async () => /global/.test(await row.textContent()), { what: 'the watcher subscribed to global' });
  const text = await row.textContent();
  assert.match(text, /test-watcher\/1\.0/);
  assert.match(text, /user/);
  await shot('connections');
  // It disappears when it closes.
  watcher.close();
  await row.waitFor({ state: 'detached', ...WAIT });
});

test('the tail shows published events, filters by type and pauses', async () => {
  await page.click('[data-testid=nav-tail]');
  await page.fill('#tail-channel', CHANNEL);
  await page.click('form:has(#tail-channel) button[type=submit]');
  // Subscribed once the admin API lists the console's connection on the channel.
  await until(async () => (await adminApi('/admin/api/connections')).connections.some((c) => c.user === 'ops' && c.channels.includes(CHANNEL)), {
    what: 'the console subscribed',
  });
  assert.equal((await publish('backtest.started', { backtest_id: 'b1', strategy_id: 's1' })).status, 200);
  for (const percent of [10, 20]) assert.equal((await publish('backtest.progress', { backtest_id: 'b1', percent })).status, 200);
  const rows = page.locator('[data-testid=tail] tbody tr');
  await until(async () => (await rows.count()) === 3, { what: '3 events in the tail' });
  // Newest first, with the published data.
  assert.match(await rows.nth(0).textContent(), /"percent":20/);
  assert.equal(await rows.nth(2).getAttribute('data-type'), 'backtest.started');
  await page.fill('#tail-filter', 'backtest.progress');
  await until(async () => (await rows.count()) === 2, { what: 'the filter' });
  await shot('tail');
  await page.fill('#tail-filter', '');
  await page.click('[data-testid=tail-pause]');
  assert.equal((await publish('backtest.progress', { backtest_id: 'b1', percent: 30 })).status, 200);
  await page.waitForSelector('[data-testid=tail-paused]:has-text("1 event(s) not shown")', WAIT);
  assert.equal(await rows.count(), 3);
  await page.click('[data-testid=tail-pause]');
  assert.equal((await publish('backtest.progress', { backtest_id: 'b1', percent: 40 })).status, 200);
  await until(async () => (await rows.count()) === 4, { what: 'the tail resumed' });
  assert.match(await rows.nth(0).textContent(), /"percent":40/);
});

test("the publish form shows the server's validation error on its field", async () => {
  await page.click('[data-testid=nav-publish]');
  await page.fill('#publish-channel', CHANNEL);
  await page.fill('#publish-type', 'backtest.progress');
  await page.fill('#publish-data', JSON.stringify({ backtest_id: 'b1', percent: 'half' }));
  await page.click('[data-testid=publish-form] button[type=submit]');
  const error = page.locator('[data-testid=error-data]');
  await error.waitFor(WAIT);
  assert.equal(await error.getAttribute('data-field'), 'data.percent');
  assert.match(await error.textContent(), /INVALID_EVENT/);
  assert.equal(await page.getAttribute('#publish-data', 'aria-invalid'), 'true');
  await shot('publish-invalid');
  // A bad channel is shown on the channel field.
  await page.fill('#publish-channel', 'no spaces allowed');
  await page.fill('#publish-data', JSON.stringify({ backtest_id: 'b1', percent: 50 }));
  await page.click('[data-testid=publish-form] button[type=submit]');
  await page.locator('[data-testid=error-channel]').waitFor(WAIT);
  assert.equal(await page.locator('[data-testid=error-data]').count(), 0);
  // A valid event is published and reaches the tail.
  await page.fill('#publish-channel', CHANNEL);
  await page.click('[data-testid=publish-form] button[type=submit]');
  await page.waitForSelector('[data-testid=publish-result]', WAIT);
  assert.match(await page.textContent('[data-testid=publish-result]'), /Published .* at offset \d+/);
  await until(async () => (await page.locator('[data-testid=tail] tbody tr').count()) === 5, { what: 'the published event in the tail' });
});

test('the history pages through every event once, newest first', async () => {
  const latest = (await adminApi('/admin/api/channels')).channels.find((c) => c.channel === CHANNEL);
  assert.equal(latest.events, 6);
  await page.click('[data-testid=nav-history]');
  await page.fill('#history-channel', CHANNEL);
  await page.fill('#history-limit', '4');
  await page.click('[data-testid=history-form] button[type=submit]');
  const seen = [];
  for (let n = 1; ; n++) {
    await page.waitForSelector(`[data-testid=history-status]:has-text("Page ${n} ")`, WAIT);
    const offsets = await page.locator('[data-testid=history] tbody tr').evaluateAll((rows) => rows.map((r) => Number(r.dataset.offset)));
    seen.push(...offsets);
    if (n === 1) await shot('history');
    if (/end reached/.test(await page.textContent('[data-testid=history-status]'))) break;
    assert.ok(n < 10, 'paging ended');
    await page.click('[data-testid=history-next]');
  }
  assert.deepEqual(seen, [6, 5, 4, 3, 2, 1]);
  assert.equal(await page.isDisabled('[data-testid=history-next]'), true);
});

test('channels show their rates, and rate-limit refusals are listed', async () => {
  await page.click('[data-testid=nav-channels]');
  const row = page.locator(`[data-testid=channels] tr[data-channel="${CHANNEL}"]`);
  await row.waitFor(WAIT);
  await until(async () => (await row.locator('[data-testid=channel-events]').textContent()) === '6', { what: 'the event count' });
  await shot('channels');
  // The default table allows a user 5 `deposit` events a minute: the 6th is refused.
  const greedy = token({ sub: 'greedy', publish: ['global'] });
  const statuses = [];
  for (let i = 0; i < 6; i++) statuses.push((await publish('deposit.made', { n: i }, greedy, 'global')).status);
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
  await page.click('[data-testid=nav-rate-limits]');
  const refusal = page.locator('[data-testid=rate-refusals] tr[data-user=greedy]');
  await refusal.waitFor(WAIT);
  assert.match(await refusal.textContent(), /type:deposit/);
  // allowed, refused, shadow of the bucket (summed, should the minute have turned meanwhile).
  const cells = await page
    .locator('[data-testid=rate-minutes] tr[data-bucket="type:deposit"]')
    .evaluateAll((rows) => rows.map((r) => [...r.cells].slice(2).map((c) => Number(c.textContent))));
  assert.deepEqual(cells.reduce((a, r) => a.map((v, i) => v + r[i]), [0, 0, 0]), [5, 1, 0]);
  await shot('rate-limits');
});

test('an expired token sends the admin back to the login form, saying why', async () => {
  const fresh = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  try {
    await fresh.goto(`${server.httpUrl}/admin`);
    await fresh.fill('#token', token({ sub: 'ops-short', role: 'admin', ttl: 3 }));
    await fresh.click('[data-testid=login] button[type=submit]');
    await fresh.waitForSelector('[data-testid=connections] tr[data-user=ops-short]', WAIT);
    await fresh.waitForSelector('[data-testid=login-error]', WAIT);
    assert.match(await fresh.textContent('[data-testid=login-error]'), /Logged out: the server refused the token \(token has expired\)/);
  } finally {
    await fresh.close();
  }
});

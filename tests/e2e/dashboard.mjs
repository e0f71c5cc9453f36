// Drives the example dashboard (examples/browser-dashboard) in headless Chromium for
// tests/e2e/test_dashboard.py:  node dashboard.mjs DASHBOARD_URL SERVER_URL SCREENSHOT.png
// Prints `ready` once the badge says connected, `dropped` after it dropped every WebSocket
// (through /_fault/drop, once a backtest passed 30 %), then one JSON line with what the page
// shows after the backtest reached 100 % and the badge shows the reconnect.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { chromium } = createRequire(join(root, 'npm', 'package.json'))('playwright-core');
const [dashboard, server, shot] = process.argv.slice(2);
const say = (s) => process.stdout.write(`${s}\n`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 960, height: 720 } });
  page.on('pageerror', (e) => errors.push(String(e)));
  // A 404 is logged by URL below (the page has no favicon, which browsers always ask for).
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) errors.push(`${r.status()} ${r.url()}`); });
  await page.goto(dashboard);
  await page.waitForSelector('#badge[data-state="connected"]', { timeout: 20_000 });
  say('ready');
  await page.waitForFunction(() => [...document.querySelectorAll('.backtest')].some((r) => Number(r.dataset.percent) >= 30), null, { timeout: 60_000, polling: 50 });
  const r = await fetch(`${server}/_fault/drop`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
  say(`dropped ${(await r.json()).dropped}`);
  await page.waitForFunction(() => {
    const badge = document.getElementById('badge');
    return document.querySelector('.backtest[data-percent="100"].done') && badge.dataset.state === 'connected' && Number(badge.dataset.reconnects) >= 1;
  }, null, { timeout: 60_000, polling: 100 });
  const result = await page.evaluate(() => {
    const badge = document.getElementById('badge');
    return {
      percents: [...document.querySelectorAll('.backtest')].map((r) => Number(r.dataset.percent)),
      done: document.querySelectorAll('.backtest.done').length,
      trade_count: Number(document.getElementById('trade-count').textContent),
      trade_rows: document.querySelectorAll('#trades tbody tr').length,
      badge: { state: badge.dataset.state, reconnects: Number(badge.dataset.reconnects), text: badge.textContent },
      stats: window.courier.stats(),
    };
  });
  await page.screenshot({ path: shot, fullPage: true });
  say(JSON.stringify({ ...result, errors }));
} catch (e) {
  say(JSON.stringify({ failed: String(e), errors }));
} finally {
  await browser.close();
}

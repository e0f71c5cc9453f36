// Runs the e2e role in headless Chromium (playwright-core, Debian's chromium):
//   node browser.mjs SCENARIO NAME WS_URL TOKEN OUT.jsonl SCREENSHOT.png
// Serves this folder at / (plus /scenario.json) and npm/dist at /courier/, relays `go` and
// `stop` from stdin to the page, writes the page's records to OUT.jsonl and prints `ready`,
// `published`, `done` like the other clients; takes a screenshot at the end.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { openSync, writeSync, closeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '../../..');
const require = createRequire(join(root, 'npm', 'package.json'));
const { chromium } = require('playwright-core');
const [scenarioPath, name, url, token, out, shot] = process.argv.slice(2);
const dist = join(root, 'npm', 'dist');
const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

const web = createServer(async (req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const file = path === '/scenario.json' ? scenarioPath
    : path.startsWith('/courier/') ? normalize(join(dist, path.slice('/courier/'.length)))
    : normalize(join(here, path === '/' ? 'browser.html' : path.slice(1)));
  if (!(file === scenarioPath || file.startsWith(dist) || file.startsWith(here))) return res.writeHead(403).end();
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => web.listen(0, '127.0.0.1', r));

const fd = openSync(out, 'w');
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding'],
});
let finished;
const done = new Promise((r) => { finished = r; });
const page = await browser.newPage({ viewport: { width: 720, height: 300 } });
page.on('console', (m) => { if (m.type() === 'error') process.stderr.write(`page: ${m.text()}\n`); });
page.on('pageerror', (e) => { process.stderr.write(`page error: ${e}\n`); finished(1); });
await page.exposeFunction('__e2eWrite', (text) => { writeSync(fd, text); });
await page.exposeFunction('__e2eStatus', (s) => {
  process.stdout.write(`${s}\n`);
  if (s === 'done') finished(0);
  if (s.startsWith('error')) finished(1);
});
createInterface({ input: process.stdin }).on('line', (l) => {
  const cmd = l.trim();
  if (cmd === 'go') page.evaluate(() => window.__e2eGo()).catch(() => {});
  if (cmd === 'stop') page.evaluate(() => window.__e2eStop()).catch(() => {});
});
const q = new URLSearchParams({ name, url, token });
await page.goto(`http://127.0.0.1:${web.address().port}/?${q}`);
const code = await done;
if (shot) await page.screenshot({ path: shot }).catch(() => {});
closeSync(fd);
await browser.close();
web.close();
process.exit(code);

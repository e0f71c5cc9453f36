// A Node script that closes its client exits by itself: nothing stays armed (socket, timer,
// request). Each case runs a child process against the real server and must end with code 0
// well before the bound (a hang is the failure these tests exist for).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { NPM_DIR, startServer, token } from './helpers.mjs';

let server;
before(async () => {
  server = await startServer();
});
after(async () => {
  await server?.stop();
});

/** Runs `body` (an ES module) in a fresh Node; resolves with its exit code and output. */
function run(body, { args = [], boundMs = 20_000 } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...args, '--input-type=module', '-e', body], {
      cwd: NPM_DIR,
      env: { ...process.env, URL_: server.httpUrl, SUB_TOKEN: token({ sub: 'exit', channels: ['backtest.*'], publish: ['backtest.*'] }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve({ code: 'hung', out });
    }, boundMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

const roundTrip = (entry) => `
  import { CourierClient } from './dist/${entry}.js';
  const client = new CourierClient({ url: process.env.URL_, token: process.env.SUB_TOKEN });
  let received;
  const got = new Promise((r) => (received = r));
  const sub = client.subscribe('backtest.exit', (e) => received(e));
  await sub.ready;
  const publisher = new CourierClient({ url: process.env.URL_, token: process.env.SUB_TOKEN });
  if (publisher.publish) await publisher.publish('backtest.exit', 'backtest.progress', { backtest_id: 'x', percent: 7 });
  else await fetch(process.env.URL_ + '/publish', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + process.env.SUB_TOKEN },
    body: JSON.stringify({ channel: 'backtest.exit', type: 'backtest.progress', data: { backtest_id: 'x', percent: 7 } }),
  });
  const e = await got;
  console.log('received', e.type, e.data.percent, e.offset > 0);
  client.close();
  publisher.close();
`;

test('subscribe, ready, publish, receive, close: the process exits by itself', async () => {
  const { code, out } = await run(roundTrip('node'));
  assert.equal(code, 0, out);
  assert.match(out, /received backtest\.progress 7 true/);
});

test('the subscriber entry point exits by itself after close() too', async () => {
  const { code, out } = await run(roundTrip('subscriber-node'));
  assert.equal(code, 0, out);
  assert.match(out, /received backtest\.progress 7 true/);
});

test('close() with publishes queued: they are delivered, then the process exits', async () => {
  const { code, out } = await run(`
    import { CourierClient } from './dist/node.js';
    const client = new CourierClient({ url: process.env.URL_, token: process.env.SUB_TOKEN });
    const acks = [];
    for (let i = 0; i < 20; i++) acks.push(client.publish('backtest.exit-drain', 'custom.n', { i }));
    client.close();
    const results = await Promise.all(acks);
    console.log('acknowledged', results.length, new Set(results.map((r) => r.offset)).size);
  `);
  assert.equal(code, 0, out);
  assert.match(out, /acknowledged 20 20/);
});

test('close() while the socket is still connecting raises nothing afterwards (its error event has a live handler)', async () => {
  // A server that takes the TCP connection and never answers the upgrade: the socket stays
  // CONNECTING, and closing it makes `ws` emit an error event after close() returned.
  const { code, out } = await run(`
    import net from 'node:net';
    import { CourierClient } from './dist/node.js';
    const held = [];
    const srv = net.createServer((s) => held.push(s)).listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    process.on('uncaughtException', (e) => { console.log('uncaught:', e.message); process.exitCode = 3; });
    const c = new CourierClient({ url: 'ws://127.0.0.1:' + srv.address().port + '/ws', token: 't' });
    c.subscribe('backtest.x', () => {});
    while (held.length === 0) await new Promise((r) => setTimeout(r, 10));
    c.close();
    await new Promise((r) => setTimeout(r, 200));
    for (const s of held) s.destroy();
    srv.close();
    console.log('closed cleanly');
  `);
  assert.equal(code, 0, out);
  assert.match(out, /closed cleanly/);
  assert.doesNotMatch(out, /uncaught/);
});

test('close() of a client still connecting and of one never used: the process exits', async () => {
  const { code, out } = await run(`
    import { CourierClient } from './dist/node.js';
    const a = new CourierClient({ url: process.env.URL_, token: process.env.SUB_TOKEN });
    const sub = a.subscribe('backtest.exit-early', () => {});
    a.close();
    await sub.ready.then(() => console.log('ready?'), (e) => console.log('not ready:', e.code));
    new CourierClient({ url: process.env.URL_, token: process.env.SUB_TOKEN }).close();
  `);
  assert.equal(code, 0, out);
  assert.match(out, /not ready: CLOSED/);
});

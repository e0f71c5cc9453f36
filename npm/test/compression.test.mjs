// WebSocket compression (permessage-deflate, RFC 7692) against the real reference server at
// its defaults (`ws.compression = "on"`): the SDK over Node's `ws` and a page in headless
// Chromium negotiate it by themselves and receive events intact (small, large, Unicode),
// across a drop; a client that does not offer it gets plain frames from the same server;
// the server's metrics show fewer bytes sent than the messages' raw size. Then the edge
// cases that matter: a fragmented compressed message from the client, a client that limits
// its window (`client_max_window_bits`), a compressed message over the size limit, and
// `ws.compression = "off"`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { WebSocket } from 'ws';
import { CourierClient } from '../dist/node.js';
import { startServer, token, fault, until } from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const EXTENSION = 'permessage-deflate; client_no_context_takeover';
let server;
const closers = [];

before(async () => {
  server = await startServer();
});
after(async () => {
  for (const c of closers) await c();
  await server?.stop();
});

const service = () => token({ sub: 'svc', role: 'service', tier: 'service' });
const UNICODE = 'héllo wörld — 日本語のテキスト — 🦀🚀 — Ωμέγα';
// Three sizes: under `ws.compression_min_bytes` (sent plain), a typical event, and a large
// one (50 KB of repetitive JSON-ish text).
const payloads = [
  { type: 'x.s', data: {} },
  { type: 'backtest.progress', data: { backtest_id: 'bt-1', percent: 42.5, processed: 1062, total: 2500, message: UNICODE } },
  { type: 'report.large', data: { rows: Array.from({ length: 600 }, (_, i) => ({ row: i, symbol: 'AAPL', note: UNICODE })) } },
];

let seq = 0;
async function publish(channel, { type, data }) {
  const res = await fetch(`${server.httpUrl}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${service()}` },
    body: JSON.stringify({ channel, type, data, id: `c-${process.pid}-${++seq}` }),
  });
  assert.equal(res.status, 200, await res.text());
}

async function metric(name) {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\d+)`, 'm'));
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
}

let rawCount = 0;
/** A raw `ws` connection speaking the protocol by hand; `options` go to `ws`. */
async function raw(options = {}, { channel, since, url = server.wsUrl } = {}) {
  const ws = new WebSocket(`${url}/ws`, options);
  closers.push(() => ws.terminate());
  const frames = [];
  let closed = null;
  ws.on('message', (data, isBinary) => {
    const f = JSON.parse(data.toString());
    if (f.op === 'ping') ws.send('{"op":"pong"}');
    frames.push(f);
  });
  ws.on('close', (code) => {
    closed = code;
  });
  ws.on('error', () => {});
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const c = {
    ws,
    frames,
    closed: () => closed,
    events: () => frames.filter((f) => f.op === 'event'),
    async wait(pred, what) {
      await until(() => frames.some(pred), { what }).catch((e) => {
        throw new Error(`${e.message}: ${JSON.stringify(frames).slice(0, 500)} (closed: ${closed})`);
      });
      return frames.find(pred);
    },
  };
  if (channel) {
    // A `sub` per connection: the per-user connection limit (5) is not what is tested.
    ws.send(JSON.stringify({ op: 'connect', token: token({ sub: `raw-${++rawCount}`, channels: ['backtest.*'] }), client: 'test' }));
    await c.wait((f) => f.op === 'connected', 'connected');
    ws.send(JSON.stringify({ op: 'subscribe', id: 1, channel, ...(since ? { since } : {}) }));
    await c.wait((f) => f.op === 'subscribed', 'subscribed');
  }
  return c;
}

test('the SDK over ws negotiates deflate and receives small, large and Unicode events intact, across a drop', async () => {
  const before = await metric('courier_ws_compressed_connections_total');
  const sub = new CourierClient({ url: server.wsUrl, token: token({ sub: 'alice', channels: ['backtest.*'] }), reconnect: { minDelayMs: 20, baseDelayMs: 50, maxDelayMs: 200 } });
  closers.push(() => sub.close());
  const got = [];
  sub.subscribe('backtest.deflate', (e) => got.push(e));
  await until(() => sub.state === 'connected', { what: 'connected' });
  await until(async () => (await metric('courier_ws_compressed_connections_total')) > before, { what: 'a compressed connection' });
  await new Promise((r) => setTimeout(r, 100));
  const rawBefore = await metric('courier_ws_sent_raw_bytes_total');
  const wireBefore = await metric('courier_ws_sent_bytes_total');
  for (const p of payloads) await publish('backtest.deflate', p);
  await until(() => got.length === 3, { what: 'three events' });
  assert.deepEqual(got.map((e) => [e.type, e.data]), payloads.map((p) => [p.type, p.data]));

  // Dropped: events published meanwhile arrive after the resume, once each, in order.
  await fault(server, 'drop');
  for (const p of payloads) await publish('backtest.deflate', p);
  await until(() => got.length === 6, { what: 'the events published across the drop' });
  assert.ok(sub.stats().reconnects >= 1);
  assert.deepEqual(got.slice(3).map((e) => [e.type, e.data]), payloads.map((p) => [p.type, p.data]));

  const raw = (await metric('courier_ws_sent_raw_bytes_total')) - rawBefore;
  const wire = (await metric('courier_ws_sent_bytes_total')) - wireBefore;
  assert.ok(wire < raw / 2, `sent ${wire} bytes for ${raw} raw`);
});

test('stats() counts the bytes on the wire: deflated below the decoded JSON, summed across a drop', async () => {
  const sub = new CourierClient({ url: server.wsUrl, token: token({ sub: 'wire', channels: ['backtest.*'] }), WebSocket, reconnect: { minDelayMs: 20, baseDelayMs: 50, maxDelayMs: 200 } });
  closers.push(() => sub.close());
  const wire = () => {
    const s = sub.stats();
    return [s.wire_bytes_received, s.wire_bytes_sent];
  };
  assert.deepEqual(wire(), [0, 0], 'counted by `ws`, nothing before the first socket');
  const got = [];
  const ready = sub.subscribe('backtest.wire', (e) => got.push(e));
  await ready.ready;
  const [atReady, sentAtReady] = wire();
  assert.ok(atReady > 0 && sentAtReady > 0, `the upgrade and subscribe counted: ${wire()}`);

  // Compressible events, as real ones are (repeated field names, ids, text).
  const event = (i) => ({ type: 'backtest.progress', data: { backtest_id: 'bt-wire', percent: i % 100, processed: i, total: 2500, message: `step ${i}: ${'replaying AAPL 2024-01-02 bars; '.repeat(12)}` } });
  for (let i = 0; i < 30; i++) await publish('backtest.wire', event(i));
  await until(() => got.length === 30, { what: '30 events' });
  const decoded = got.reduce((n, e) => n + Buffer.byteLength(JSON.stringify(e)), 0);
  const [afterEvents] = wire();
  const onWire = afterEvents - atReady;
  assert.ok(onWire > 0, 'the events were counted');
  assert.ok(onWire < decoded, `${onWire} bytes on the wire for ${decoded} bytes of decoded JSON`);

  // A new connection adds to the same sums: fewer events than before, so a count that
  // restarted per connection would fall below the earlier total.
  await fault(server, 'drop');
  await until(() => sub.state === 'connected' && sub.stats().reconnects >= 1, { what: 'reconnected' });
  for (let i = 30; i < 33; i++) await publish('backtest.wire', event(i));
  await until(() => got.length === 33, { what: '3 more events' });
  const [received, sent] = wire();
  assert.ok(received > afterEvents, `cumulative: ${afterEvents} then ${received}`);
  assert.ok(sent > sentAtReady, 'the second upgrade and resubscribe were sent');
});

test('the handshake tells: deflate when offered, plain frames to a client that does not offer it', async () => {
  const channel = 'backtest.mixed';
  const deflating = await raw({}, { channel });
  const plain = await raw({ perMessageDeflate: false }, { channel });
  assert.equal(deflating.ws.extensions, 'permessage-deflate');
  assert.equal(plain.ws.extensions, '');
  for (const p of payloads) await publish(channel, p);
  for (const c of [deflating, plain]) {
    await until(() => c.events().length === 3, { what: 'three events' });
    assert.deepEqual(c.events().map((f) => f.event.data), payloads.map((p) => p.data));
  }
  // `ws` refuses a frame with RSV1 on a connection without the extension: the plain
  // client got every frame uncompressed and is still open.
  assert.equal(plain.closed(), null);
});

test('a raw handshake shows the parameters the server answers', async () => {
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  const net = await import('node:net');
  const [host, port] = server.addr.split(':');
  const answer = (ext) =>
    new Promise((resolve, reject) => {
      const s = net.connect(Number(port), host, () => {
        s.write(`GET /ws HTTP/1.1\r\nHost: ${server.addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n${ext ? `Sec-WebSocket-Extensions: ${ext}\r\n` : ''}\r\n`);
      });
      let head = '';
      s.on('data', (d) => {
        head += d;
        if (head.includes('\r\n\r\n')) {
          s.destroy();
          resolve(head);
        }
      });
      s.on('error', reject);
    });
  const offered = await answer('permessage-deflate; client_max_window_bits');
  assert.match(offered, /^HTTP\/1.1 101/);
  assert.ok(offered.toLowerCase().includes(`sec-websocket-extensions: ${EXTENSION}`), offered);
  const noContext = await answer('permessage-deflate; server_no_context_takeover');
  assert.ok(noContext.toLowerCase().includes('sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover'), noContext);
  // A smaller server window is declined (the deflater's is fixed): plain frames.
  const small = await answer('permessage-deflate; server_max_window_bits=10');
  assert.match(small, /^HTTP\/1.1 101/);
  assert.ok(!small.toLowerCase().includes('sec-websocket-extensions'), small);
});

test('subscribers that join while events flow, with other traffic between events, read every event intact', async () => {
  // Subscribers that go live together share one deflate stream with context; one that
  // joins later, resumes, subscribes to a second channel, publishes or refuses context
  // takeover must still read every event (`ws` fails the connection on a bad stream).
  const channel = 'backtest.cohort';
  const first = [await raw({}, { channel }), await raw({}, { channel })];
  const noContext = await raw({ perMessageDeflate: { serverNoContextTakeover: true } }, { channel });
  const sent = [];
  const publishN = async (n) => {
    for (let i = 0; i < n; i++) {
      const p = { type: 'backtest.progress', data: { backtest_id: 'bt-c', percent: sent.length % 100, message: `${UNICODE} #${sent.length}` } };
      sent.push(p.data);
      await publish(channel, p);
    }
  };
  await publishN(5);
  const late = await raw({}, { channel });
  const resumed = await raw({}, { channel, since: { epoch: first[0].events()[0]?.epoch ?? (await first[0].wait((f) => f.op === 'event', 'event')).epoch, offset: 2 } });
  // Other traffic between events: a second channel's events, pongs, a publish's ack.
  first[0].ws.send(JSON.stringify({ op: 'subscribe', id: 2, channel: 'backtest.cohort2' }));
  await first[0].wait((f) => f.op === 'subscribed' && f.id === 2, 'second subscription');
  for (let i = 0; i < 5; i++) {
    await publishN(1);
    await publish('backtest.cohort2', payloads[1]);
    first[1].ws.send('{"op":"ping"}');
  }
  await publishN(5);
  const all = [...first, noContext];
  for (const c of all) await until(() => c.events().filter((f) => f.event.channel === channel).length === 15, { what: '15 events' });
  for (const c of all) assert.deepEqual(c.events().filter((f) => f.event.channel === channel).map((f) => f.event.data), sent);
  await until(() => late.events().length === 10, { what: 'the late subscriber\'s 10 events' });
  assert.deepEqual(late.events().map((f) => f.event.data), sent.slice(5));
  await until(() => resumed.events().length === 13, { what: 'the resumed subscriber\'s 13 events' });
  assert.deepEqual(resumed.events().map((f) => f.event.data), sent.slice(2));
  assert.equal(first[0].events().filter((f) => f.event.channel === 'backtest.cohort2').length, 5);
  for (const c of [...all, late, resumed]) assert.equal(c.closed(), null);
  assert.equal(noContext.ws.extensions, 'permessage-deflate');
});

test('a fragmented compressed message from the client is read whole', async () => {
  const c = await raw({ perMessageDeflate: { threshold: 0 } });
  const connect = JSON.stringify({ op: 'connect', token: token({ sub: 'frag', channels: ['backtest.*'] }), client: 'fragments' });
  const cut = [0, 40, 90, connect.length];
  for (let i = 0; i + 1 < cut.length; i++) {
    c.ws.send(connect.slice(cut[i], cut[i + 1]), { fin: i + 2 === cut.length, compress: true });
  }
  await c.wait((f) => f.op === 'connected', 'connected after a fragmented compressed connect');
  c.ws.send(JSON.stringify({ op: 'subscribe', id: 7, channel: 'backtest.frag' }), { compress: true });
  await c.wait((f) => f.op === 'subscribed' && f.id === 7, 'subscribed');
});

test('a client with client_max_window_bits publishes and receives compressed', async () => {
  const c = await raw({ perMessageDeflate: { clientMaxWindowBits: 9, threshold: 0 } });
  c.ws.send(JSON.stringify({ op: 'connect', token: token({ sub: 'svc2', role: 'service', tier: 'service' }), client: 'window' }));
  await c.wait((f) => f.op === 'connected', 'connected');
  c.ws.send(JSON.stringify({ op: 'subscribe', id: 1, channel: 'backtest.window' }));
  await c.wait((f) => f.op === 'subscribed', 'subscribed');
  const data = payloads[2].data;
  c.ws.send(JSON.stringify({ op: 'publish', id: 2, event: { id: 'w-1', channel: 'backtest.window', type: 'report.large', data } }));
  await c.wait((f) => f.op === 'ack' && f.id === 2, 'ack');
  const e = await c.wait((f) => f.op === 'event', 'event');
  assert.deepEqual(e.event.data, data);
});

test('a compressed message over the size limit is refused with 1009', async () => {
  const c = await raw({ perMessageDeflate: { threshold: 0 } });
  // 8 MB of one letter deflates to a few KB, under the limit on the wire, far over it inflated.
  c.ws.send(JSON.stringify({ op: 'connect', token: 'x'.repeat(8 * 1024 * 1024) }));
  await until(() => c.closed() !== null, { what: 'close' });
  assert.equal(c.closed(), 1009);
  const err = c.frames.find((f) => f.op === 'error');
  assert.equal(err?.code, 'PAYLOAD_TOO_LARGE', JSON.stringify(c.frames));
});

test('with ws.compression = "off" the offer is declined', async () => {
  const off = await startServer({ env: { COURIER_WS__COMPRESSION: 'off' } });
  closers.push(() => off.stop());
  const c = await raw({}, { channel: 'backtest.off', url: off.wsUrl });
  assert.equal(c.ws.extensions, '');
});

test('headless Chromium negotiates deflate and receives events intact, then resumes after a drop', async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  closers.push(() => browser.close());
  const page = await browser.newPage();
  const channel = 'backtest.chromium';
  const tok = token({ sub: 'browser', channels: ['backtest.*'] });
  // A page-side client speaking the protocol with the browser's own WebSocket.
  const open = (since) =>
    page.evaluate(
      ({ url, tok, channel, since }) =>
        new Promise((resolve, reject) => {
          window.__events ??= [];
          const ws = new WebSocket(`${url}/ws`);
          window.__ws = ws;
          ws.onerror = () => reject(new Error('websocket error'));
          ws.onopen = () => ws.send(JSON.stringify({ op: 'connect', token: tok, client: 'chromium' }));
          ws.onmessage = (m) => {
            const f = JSON.parse(m.data);
            if (f.op === 'connected') ws.send(JSON.stringify({ op: 'subscribe', id: 1, channel, ...(since ? { since } : {}) }));
            if (f.op === 'subscribed') resolve(ws.extensions);
            if (f.op === 'ping') ws.send('{"op":"pong"}');
            if (f.op === 'event') window.__events.push(f);
          };
        }),
      { url: server.wsUrl, tok, channel, since },
    );
  const events = () => page.evaluate(() => window.__events);
  assert.equal(await open(null), EXTENSION);
  for (const p of payloads) await publish(channel, p);
  await until(async () => (await events()).length === 3, { what: 'three events in Chromium' });

  await fault(server, 'drop');
  await until(() => page.evaluate(() => window.__ws.readyState === 3), { what: 'dropped' });
  for (const p of payloads) await publish(channel, p);
  const last = (await events()).at(-1);
  assert.equal(await open({ epoch: last.epoch, offset: last.offset }), EXTENSION);
  await until(async () => (await events()).length === 6, { what: 'the three missed events replayed' });
  const got = await events();
  assert.deepEqual(got.map((f) => f.event.data), [...payloads, ...payloads].map((p) => p.data));
  assert.deepEqual(got.map((f) => f.offset), got.map((_, i) => got[0].offset + i));
});

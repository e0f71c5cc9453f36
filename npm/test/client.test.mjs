// CourierClient in Node against the real reference server (`courier-server`, fault injection on).
//
// Run three ways by `make test-npm`: as is (Node 20 without a global WebSocket: the entry
// point's default, the `ws` package); with COURIER_TEST_WEBSOCKET=ws (`ws`'s constructor
// passed in the options) and COURIER_TEST_ENTRY=subscriber (every subscribing client from
// `courier-client/subscriber`); and under `node --experimental-websocket` with
// COURIER_TEST_WEBSOCKET=global (Node's own WebSocket, as on Node 22).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as courier from '../dist/node.js';
import {
  CourierClient,
  CourierError,
  endpoints,
  AuthError,
  RateLimitError,
  UsageError,
  ValidationError,
} from '../dist/node.js';
import { CourierClient as SubscriberClient } from '../dist/subscriber-node.js';
import { WebSocket as WsWebSocket } from 'ws';
import { ROOT, startServer, token, fault, until, sleep } from './helpers.mjs';

const mode = process.env.COURIER_TEST_WEBSOCKET;
if (mode === 'global') assert.equal(typeof globalThis.WebSocket, 'function', 'run with node --experimental-websocket');
// The constructor every client gets: the entry point's default, `ws` passed in, or the global.
const socketOption = mode === 'ws' ? { WebSocket: WsWebSocket } : mode === 'global' ? { WebSocket: globalThis.WebSocket } : {};
const SubscribingClient = process.env.COURIER_TEST_ENTRY === 'subscriber' ? SubscriberClient : CourierClient;

const fast = { minDelayMs: 20, baseDelayMs: 50, maxDelayMs: 200 };
let server;
const clients = [];

function client(options, Client = CourierClient) {
  const c = new Client({ url: server.wsUrl, reconnect: fast, ...socketOption, ...options });
  clients.push(c);
  return c;
}
const subscriber = (channels = ['backtest.*']) => client({ token: token({ sub: 'alice', channels }) }, SubscribingClient);
const publisher = (options = {}) => client({ token: token({ sub: 'svc', role: 'service', tier: 'service' }), ...options });

// The server at its defaults, rate limits on: publishers are services (limits ×20), and
// each test's user has its own `sub`, so its own buckets.
before(async () => {
  server = await startServer();
});
after(async () => {
  for (const c of clients) c.close();
  await server?.stop();
});

test('publish and receive typed events in order', async () => {
  const sub = subscriber();
  const pub = publisher();
  const got = [];
  let percentSum = 0;
  sub.subscribe('backtest.typed', (e) => {
    got.push(e);
    if (e.type === 'backtest.progress') percentSum += e.data.percent ?? 0;
  });
  sub.connect();
  await until(() => sub.state === 'connected', { what: 'connected' });
  await sleep(50); // the subscribe frame is answered
  const results = [];
  for (let i = 1; i <= 10; i++) {
    results.push(await pub.publish('backtest.typed', 'backtest.progress', { backtest_id: 'typed', percent: i }));
  }
  results.push(await pub.publish('backtest.typed', 'backtest.completed', { backtest_id: 'typed', sharpe_ratio: 1.5, total_return: '0.125' }));
  results.push(await pub.publish('backtest.typed', 'custom.note', { free: ['form'] }));
  await until(() => got.length === 12, { what: '12 events' });
  assert.deepEqual(got.map((e) => e.offset), results.map((r) => r.offset));
  assert.deepEqual(got.map((e) => e.id), results.map((r) => r.id));
  assert.equal(percentSum, 55);
  assert.equal(got[10].type, 'backtest.completed');
  assert.equal(got[10].data.total_return, '0.125');
  assert.deepEqual(got[11].data, { free: ['form'] });
  assert.equal(typeof got[0].metadata.timestamp, 'number');
  assert.equal(got[0].epoch, results[0].epoch);
  assert.equal(results[0].duplicate, false);
  assert.equal(results[0].attempts, 1);
  assert.deepEqual(sub.position('backtest.typed'), { epoch: results[0].epoch, offset: results[11].offset });
});

test('invalid events are refused before sending, with the field at fault', async () => {
  const pub = publisher();
  await assert.rejects(pub.publish('backtest.x', 'backtest.progress', { backtest_id: 'x', percent: 150 }), (e) => {
    assert.ok(e instanceof ValidationError && e instanceof CourierError && e instanceof Error);
    assert.equal(e.code, 'INVALID_EVENT');
    assert.equal(e.field, 'data.percent');
    return true;
  });
  await assert.rejects(pub.publish('bad channel!', 'custom.x', {}), (e) => e instanceof ValidationError && e.field === 'channel');
  assert.equal(pub.stats().acknowledged, 0);
});

test('an idempotency key publishes once: the repeat is acknowledged as a duplicate', async () => {
  const pub = publisher();
  const first = await pub.publish('backtest.idem', 'custom.once', { n: 1 }, { idempotencyKey: 'order-123' });
  const again = await pub.publish('backtest.idem', 'custom.once', { n: 1 }, { idempotencyKey: 'order-123' });
  assert.equal(first.duplicate, false);
  assert.equal(again.duplicate, true);
  assert.equal(again.offset, first.offset);
});

test('a forbidden channel is reported as an AuthError and the client keeps working', async () => {
  const sub = subscriber(['backtest.*']);
  const errors = [];
  sub.on('error', (e) => errors.push(e));
  const refused = sub.subscribe('strategy.secret', () => assert.fail('no event expected'));
  sub.connect();
  await assert.rejects(refused.ready, (e) => e instanceof AuthError && e.code === 'FORBIDDEN_CHANNEL');
  await until(() => errors.some((e) => e.code === 'FORBIDDEN_CHANNEL'), { what: 'FORBIDDEN_CHANNEL' });
  const err = errors.find((e) => e.code === 'FORBIDDEN_CHANNEL');
  assert.ok(err instanceof AuthError);
  assert.equal(sub.listenerCount('strategy.secret'), 0);
  assert.equal(sub.state, 'connected');
});

test('ready resolves with the position once live: what is published after it arrives, for a second listener too', async () => {
  const sub = subscriber();
  const pub = publisher();
  const first = await pub.publish('backtest.ready', 'custom.before', { n: 0 });
  const got = [];
  const a = sub.subscribe('backtest.ready', (e) => got.push(['a', e.offset]));
  const position = await a.ready;
  assert.deepEqual(position, { epoch: first.epoch, offset: first.offset }, 'the channel stands at the event published before');
  const b = sub.subscribe('backtest.ready', (e) => got.push(['b', e.offset]));
  assert.deepEqual(await b.ready, position);
  const r = await pub.publish('backtest.ready', 'custom.after', { n: 1 });
  await until(() => got.length === 2, { what: 'the event, once per listener' });
  assert.deepEqual(got, [['a', r.offset], ['b', r.offset]]);
  const c = sub.subscribe('backtest.ready-never', () => {});
  c.unsubscribe();
  await assert.rejects(c.ready, (e) => e.code === 'CLOSED');
});

test('dropped connections resume with nothing lost and nothing duplicated', async () => {
  const sub = subscriber();
  const pub = publisher();
  const offsets = [];
  const gaps = [];
  sub.on('gap', (g) => gaps.push(g));
  sub.subscribe('backtest.drops', (e) => offsets.push(e.offset));
  sub.connect();
  await until(() => sub.state === 'connected', { what: 'connected' });
  await sleep(50);
  const total = 120;
  const publishing = (async () => {
    for (let i = 0; i < total; i++) {
      await pub.publish('backtest.drops', 'backtest.progress', { backtest_id: 'drops', percent: (i * 100) / total });
      if (i % 5 === 0) await sleep(5);
    }
  })();
  for (let d = 0; d < 3; d++) {
    await sleep(80);
    await fault(server, 'drop');
  }
  await publishing;
  await until(() => offsets.length >= total, { what: `${total} events`, timeoutMs: 15_000 });
  await sleep(100);
  assert.equal(offsets.length, total, 'no event duplicated');
  assert.deepEqual(offsets, Array.from({ length: total }, (_, i) => i + 1), 'every offset once, in order');
  assert.deepEqual(gaps, []);
  const stats = sub.stats();
  assert.ok(stats.reconnects >= 1, `reconnected (${stats.reconnects})`);
  assert.equal(stats.gaps, 0);
});

test('a server restart is reported as a gap and the stream goes on', async () => {
  const own = await startServer();
  try {
    const sub = client({ url: own.wsUrl, token: token({ sub: 'alice', channels: ['backtest.*'] }) });
    const pub = client({ url: own.wsUrl, token: token({ sub: 'svc', role: 'service' }) });
    const got = [];
    const gaps = [];
    const states = [];
    sub.on('gap', (g) => gaps.push(g));
    sub.on('state', (s) => states.push(s));
    sub.subscribe('backtest.restart', (e) => got.push(e));
    sub.connect();
    await until(() => sub.state === 'connected', { what: 'connected' });
    await sleep(50);
    for (let i = 1; i <= 3; i++) await pub.publish('backtest.restart', 'backtest.progress', { backtest_id: 'r', percent: i });
    await until(() => got.length === 3, { what: 'events before restart' });
    const oldEpoch = got[0].epoch;

    await own.stop();
    await until(() => sub.state !== 'connected', { what: 'disconnect' });
    const again = await startServer({ listen: own.addr });
    own.stop = again.stop; // the after-hook of this test stops the new process
    await until(() => gaps.length === 1, { what: 'gap', timeoutMs: 10_000 });
    for (let i = 4; i <= 5; i++) await pub.publish('backtest.restart', 'backtest.progress', { backtest_id: 'r', percent: i });
    await until(() => got.length === 5, { what: 'events after restart' });

    assert.equal(gaps[0].channel, 'backtest.restart');
    assert.equal(gaps[0].reason, 'epoch_changed');
    assert.deepEqual(gaps[0].last, { epoch: oldEpoch, offset: 3 });
    assert.notEqual(gaps[0].position.epoch, oldEpoch);
    assert.deepEqual(got.slice(3).map((e) => e.data.percent), [4, 5]);
    assert.notEqual(got[4].epoch, oldEpoch);
    assert.ok(states.includes('disconnected') || states.includes('connecting'));
    assert.equal(sub.stats().gaps, 1);
  } finally {
    await own.stop();
  }
});

test('429: nothing is sent before Retry-After, then the event goes through', async () => {
  const requests = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = async (url, init) => {
    const sentAt = Date.now();
    const res = await realFetch(url, init);
    requests.push({ url: String(url), sentAt, status: res.status, answeredAt: Date.now() });
    return res;
  };
  try {
    const pub = publisher();
    await fault(server, 'fail', { status: 429, count: 1, retry_after_secs: 1 });
    const result = await pub.publish('backtest.limited', 'backtest.progress', { backtest_id: 'l', percent: 1 });
    const batches = requests.filter((r) => r.url.endsWith('/publish/batch'));
    assert.equal(batches.length, 2, 'one refused request, one retry');
    assert.equal(batches[0].status, 429);
    assert.equal(batches[1].status, 200);
    const waited = batches[1].sentAt - batches[0].answeredAt;
    assert.ok(waited >= 990, `retried ${waited} ms after the 429; Retry-After was 1 s`);
    assert.equal(result.attempts, 2);
    assert.equal(result.duplicate, false);
    assert.ok(pub.stats().rate_limit_waits >= 1);
  } finally {
    globalThis.fetch = realFetch;
    await fault(server, 'reset');
  }
});

test('a 429 on every attempt ends as a RateLimitError and a dead letter', async () => {
  const pub = publisher({ publish: { maxAttempts: 2 } });
  await fault(server, 'fail', { status: 429, count: 5, retry_after_secs: 0 });
  try {
    await assert.rejects(pub.publish('backtest.dead', 'custom.x', { a: 1 }, { retry: false }), (e) => {
      assert.ok(e instanceof RateLimitError);
      assert.equal(e.code, 'RATE_LIMIT_EXCEEDED');
      assert.equal(e.status, 429);
      return true;
    });
    const dead = pub.deadLetters();
    assert.equal(dead.length, 1);
    assert.equal(dead[0].channel, 'backtest.dead');
    assert.ok(dead[0].error instanceof RateLimitError);
    assert.equal(pub.stats().dead, 1);
  } finally {
    await fault(server, 'reset');
  }
});

test('an expiring token is asked for again and the stream goes on', async () => {
  let calls = 0;
  const sub = client({
    token: async () => {
      calls += 1;
      await sleep(5);
      return token({ sub: 'alice', channels: ['backtest.*'], ttl: 2 });
    },
  });
  const pub = publisher();
  const got = [];
  sub.subscribe('backtest.tokens', (e) => got.push(e.offset));
  sub.connect();
  await until(() => sub.state === 'connected', { what: 'connected' });
  await sleep(50);
  await pub.publish('backtest.tokens', 'custom.tick', { n: 1 });
  await until(() => calls >= 2, { what: 'a second token request', timeoutMs: 6_000 });
  await until(() => sub.state === 'connected', { what: 'connected again' });
  await sleep(100);
  await pub.publish('backtest.tokens', 'custom.tick', { n: 2 });
  await until(() => got.length === 2, { what: 'the event after the refresh' });
  assert.deepEqual(got, [1, 2]);
  assert.ok(calls >= 2);
});

test('flush waits for every acknowledgement; stats count them', async () => {
  const pub = publisher();
  const all = [];
  for (let i = 0; i < 250; i++) all.push(pub.publish('backtest.flush', 'custom.n', { i }, { priority: i % 2 ? 'low' : 'high' }));
  await pub.flush();
  const stats = pub.stats();
  assert.equal(stats.acknowledged, 250);
  assert.equal(stats.queued_high + stats.queued_normal + stats.queued_low, 0);
  assert.equal(stats.in_flight, 0);
  const results = await Promise.all(all);
  assert.equal(new Set(results.map((r) => r.offset)).size, 250);
});

test('stats() counts the socket bytes with `ws`, and says null with Node\'s own WebSocket', async () => {
  // Its own user: the per-user connection limit (5) is not what is tested.
  const sub = client({ token: token({ sub: 'wire-bytes', channels: ['backtest.*'] }) }, SubscribingClient);
  const got = [];
  await sub.subscribe('backtest.wirebytes', (e) => got.push(e)).ready;
  const pub = publisher();
  for (let i = 0; i < 5; i++) await pub.publish('backtest.wirebytes', 'custom.n', { i });
  await until(() => got.length === 5, { what: 'five events' });
  const s = sub.stats();
  if (mode === 'global') {
    // Node's WebSocket (undici) exposes no socket: nothing to count, and nothing made up.
    assert.equal(s.wire_bytes_received, null);
    assert.equal(s.wire_bytes_sent, null);
  } else {
    assert.ok(s.wire_bytes_received > 0 && s.wire_bytes_sent > 0, `${s.wire_bytes_received} / ${s.wire_bytes_sent}`);
  }
  // The publisher never opened a WebSocket: its HTTP requests are not counted.
  const p = pub.stats();
  assert.deepEqual([p.wire_bytes_received, p.wire_bytes_sent], mode === 'global' ? [null, null] : [0, 0]);
});

test('a closed client refuses work with a UsageError', async () => {
  const c = publisher();
  c.close();
  assert.equal(c.state, 'closed');
  await assert.rejects(c.publish('backtest.x', 'custom.x', {}), (e) => e instanceof UsageError && e.code === 'CLOSED');
  assert.throws(() => c.subscribe('backtest.x', () => {}), (e) => e instanceof UsageError && e.code === 'CLOSED');
});

test('a URL the core does not accept is refused with a ValidationError naming `url`', () => {
  for (const url of ['ftp://x', 'localhost:8766', 'ws://host:1/?q=1']) {
    assert.throws(() => new CourierClient({ url, token: 't' }), (e) => e instanceof ValidationError && e.field === 'url', url);
  }
});

// --- one client in the core (issue #12): URLs, connect on subscribe, listeners, stamping,
// the one token, named stats. The TypeScript layer decides none of these.

/** A token that may both subscribe to and publish on `backtest.*`. */
const both = (sub) => token({ sub, channels: ['backtest.*'], publish: ['backtest.*'] });

test('the core derives both endpoints from an http:// or a ws:// URL', () => {
  assert.deepEqual(endpoints('http://h:1'), { wsUrl: 'ws://h:1/ws', publishUrl: 'http://h:1/publish/batch' });
  assert.deepEqual(endpoints('wss://h/p/ws/'), { wsUrl: 'wss://h/p/ws', publishUrl: 'https://h/p/publish/batch' });
  assert.deepEqual(endpoints('ws://h:1', 'https://api.h/v1'), { wsUrl: 'ws://h:1/ws', publishUrl: 'https://api.h/v1/publish/batch' });
});

test('http:// and ws:// URLs (with or without /ws, with httpUrl) subscribe and publish against the server', async () => {
  const forms = [
    { url: server.wsUrl },
    { url: server.httpUrl },
    { url: `${server.wsUrl}/ws` },
    { url: `${server.httpUrl}/ws`, httpUrl: server.httpUrl },
  ];
  for (const [i, form] of forms.entries()) {
    const c = client({ ...form, token: both(`node-url-${i}`) });
    const got = [];
    c.subscribe(`backtest.url${i}`, (e) => got.push(e));
    await until(() => c.state === 'connected', { what: `connected with ${JSON.stringify(form)}` });
    await sleep(50);
    const r = await c.publish(`backtest.url${i}`, 'custom.url', { i });
    await until(() => got.length === 1, { what: `the event with ${JSON.stringify(form)}` });
    assert.equal(got[0].id, r.id);
  }
});

/** A subscriber with a user of its own (each user has a connection limit). */
const ownSubscriber = (sub) => client({ token: token({ sub, channels: ['backtest.*'] }) });

test('subscribe() connects by itself; publishing alone never opens the WebSocket', async () => {
  const pub = publisher();
  await pub.publish('backtest.lazy', 'custom.x', { n: 0 });
  assert.equal(pub.state, 'disconnected', 'publishing needs no WebSocket');

  const sub = ownSubscriber('node-lazy');
  assert.equal(sub.state, 'disconnected');
  const got = [];
  sub.subscribe('backtest.lazy', (e) => got.push(e.data.n));
  assert.equal(sub.state, 'connecting', 'the subscription started connecting');
  await until(() => sub.state === 'connected', { what: 'connected without connect()' });
  await sleep(50);
  await pub.publish('backtest.lazy', 'custom.x', { n: 1 });
  await until(() => got.length === 1, { what: 'the event' });
  assert.deepEqual(got, [1]);
  sub.connect(); // connecting again is harmless
  assert.equal(sub.state, 'connected');
});

test('subscribing twice gives two handlers; each unsubscribe removes its own; another `since` is refused', async () => {
  const sub = ownSubscriber('node-twice');
  const pub = publisher();
  const a = [];
  const b = [];
  const first = sub.subscribe('backtest.twice', (e) => a.push(e.data.n));
  await until(() => sub.state === 'connected', { what: 'connected' });
  await sleep(50);
  await pub.publish('backtest.twice', 'custom.x', { n: 1 });
  await until(() => a.length === 1, { what: 'the first event' });

  const second = sub.subscribe('backtest.twice', (e) => b.push(e.data.n));
  assert.equal(sub.listenerCount('backtest.twice'), 2);
  await pub.publish('backtest.twice', 'custom.x', { n: 2 });
  await until(() => a.length === 2 && b.length === 1, { what: 'the event, for both handlers' });
  assert.deepEqual(a, [1, 2]);
  assert.deepEqual(b, [2], 'the second handler starts at the current position');

  // A second handler that wants a replay cannot share the channel's one server subscription.
  const { typescript } = JSON.parse(readFileSync(join(ROOT, 'tests', 'vectors', 'errors.json'), 'utf8')).cases.find(
    (c) => c.code === 'ALREADY_SUBSCRIBED',
  );
  const position = sub.position('backtest.twice');
  assert.throws(
    () => sub.subscribe('backtest.twice', () => assert.fail('no event expected'), { since: { epoch: position.epoch, offset: 0 } }),
    (e) => {
      assert.ok(e instanceof courier[typescript], `${e.constructor.name} is a ${typescript}`);
      assert.equal(e.constructor.name, typescript);
      assert.equal(e.code, 'ALREADY_SUBSCRIBED');
      return true;
    },
  );
  // The current position is no replay: that listener is welcome.
  const third = sub.subscribe('backtest.twice', () => {}, { since: position });
  third.unsubscribe();
  assert.equal(sub.listenerCount('backtest.twice'), 2);

  first.unsubscribe();
  first.unsubscribe(); // twice is harmless and removes nothing else
  assert.equal(sub.listenerCount('backtest.twice'), 1);
  await pub.publish('backtest.twice', 'custom.x', { n: 3 });
  await until(() => b.length === 2, { what: 'the event, for the remaining handler' });
  await sleep(50);
  assert.deepEqual(a, [1, 2], 'the removed handler gets nothing more');
  assert.deepEqual(b, [2, 3]);
  const stats = sub.stats();
  assert.equal(stats.events_received, 3, 'counted once per event, however many handlers');
  assert.equal(stats.channels, 1);
  second.unsubscribe();
  assert.equal(sub.stats().channels, 0, 'the last handler ends the server subscription');
});

test('serviceName is stamped as metadata.source and seen by a subscriber', async () => {
  const sub = ownSubscriber('node-source');
  const pub = publisher({ serviceName: 'billing-svc' });
  const got = [];
  sub.subscribe('backtest.source', (e) => got.push(e));
  await until(() => sub.state === 'connected', { what: 'connected' });
  await sleep(50);
  const before = Date.now();
  const r = await pub.publish('backtest.source', 'custom.x', { n: 1 });
  await pub.publish('backtest.source', 'custom.x', { n: 2 }, { metadata: { source: 'explicit' } });
  await until(() => got.length === 2, { what: 'two events' });
  assert.equal(got[0].metadata.source, 'billing-svc');
  assert.equal(got[1].metadata.source, 'explicit', 'an event may name its own source');
  assert.equal(got[0].id, r.id, 'the id the core stamped');
  assert.ok(got[0].metadata.timestamp >= before - 1000 && got[0].metadata.timestamp <= Date.now() + 1000);
});

test('one token provider call serves the WebSocket and publishing at start-up', async () => {
  let calls = 0;
  const c = client({
    token: async () => {
      calls += 1;
      await sleep(20); // both halves ask while this call is out
      return both('node-one-token');
    },
  });
  const got = [];
  c.subscribe('backtest.onetoken', (e) => got.push(e.data.n));
  await c.publish('backtest.onetoken', 'custom.x', { n: 0 });
  assert.equal(calls, 1, 'one call for the first publish and the subscription');
  await until(() => c.state === 'connected', { what: 'connected' });
  await sleep(50);
  await c.publish('backtest.onetoken', 'custom.x', { n: 1 });
  await until(() => got.includes(1), { what: 'the event' });
  assert.equal(calls, 1, 'one provider call for the WebSocket and HTTP');
  assert.equal(c.stats().token_fetches, 1);
});

test('stats() names every counter as the core does', async () => {
  const pub = publisher();
  await pub.publish('backtest.stats', 'custom.x', {}, { priority: 'low' });
  const stats = pub.stats();
  assert.deepEqual(Object.keys(stats).sort(), [
    'acknowledged', 'budget_exhausted', 'channels', 'dead', 'duplicates_dropped', 'events_received', 'gaps',
    'heartbeat_timeouts', 'in_flight', 'paused_channels', 'pauses', 'queued_high', 'queued_low', 'queued_normal',
    'rate_limit_waits', 'reconnects', 'retries', 'retrying', 'token_fetches', 'wire_bytes_received', 'wire_bytes_sent',
  ]);
  // Every count a non-negative integer; the wire bytes `null` where the WebSocket hides its socket.
  const { wire_bytes_received: _r, wire_bytes_sent: _s, ...counts } = stats;
  assert.ok(Object.values(counts).every((v) => Number.isInteger(v) && v >= 0));
  assert.ok([_r, _s].every((v) => v === null || (Number.isInteger(v) && v >= 0)));
  assert.equal(stats.acknowledged, 1);
  assert.equal(stats.token_fetches, 1);
  assert.equal(stats.channels, 0);
});

// --- the client-side limiter against the server's default limits ---------------------------
// The default table (courier-server config.rs): `deposit` (and `deposit.*`) allows 5 a
// minute, all 5 back to back, then one every 12 s; the `premium` tier multiplies that by 5
// (25, then one every 2.4 s). A type no row matches (`custom.x`) is charged to the user's
// fallback bucket (300). Margins: "at once" is a fraction of the refill interval (a client
// that waited for the bucket at all would take a whole interval); "when it refills" has
// 1.5 s of slack for a loaded machine.
const LIMITED_TYPE = 'deposit.made';
const UNLIMITED_TYPE = 'custom.x';
const limitedUser = (sub, tier) => client({ token: token({ sub, role: 'user', publish: ['backtest.*'], tier }) });

/**
 * The server's record of every publish request made with a token of `sub`, in arrival order,
 * after checking that none was refused, whole (429) or per event (`refused`): whatever the
 * client waited for, it waited on its own.
 */
async function publishesNoneRefused(sub) {
  const { requests } = await (await fetch(`${server.httpUrl}/_fault/requests`)).json();
  const mine = requests.filter((r) => r.path.startsWith('/publish') && r.sub === sub);
  assert.ok(mine.length > 0, 'the server saw the publishes');
  assert.deepEqual(mine.filter((r) => r.status !== 200 || r.refused?.length), [], 'refused by the server');
  return mine;
}

test('a limited burst goes out at once and an unlimited type is not held behind it', async () => {
  const pub = limitedUser('node-burst', 'standard');
  let started = performance.now();
  for (let i = 0; i < 5; i++) {
    const r = await pub.publish('backtest.limits', LIMITED_TYPE, { amount: String(i) });
    assert.equal(r.attempts, 1);
  }
  const burst = performance.now() - started;
  assert.equal(pub.stats().rate_limit_waits, 0, 'the whole burst went out without a wait');
  // Any wait for the deposit bucket lasts a refill interval (12 s).
  assert.ok(burst < 6_000, `5 publishes took ${burst.toFixed(0)} ms`);
  // The deposit bucket is now empty for 12 s; the fallback bucket is almost full.
  started = performance.now();
  const r = await pub.publish('backtest.limits', UNLIMITED_TYPE, { n: 1 });
  const took = performance.now() - started;
  assert.ok(took < 1_000, `an unlimited type waited ${took.toFixed(0)} ms behind the deposit bucket`);
  assert.equal(r.attempts, 1);
  assert.equal(pub.stats().rate_limit_waits, 0);
  await publishesNoneRefused('node-burst');
});

test('an exhausted bucket holds its event until it refills, not later', async () => {
  // Premium: 25 deposits back to back, then one every 2.4 s (standard would take 12 s).
  const pub = limitedUser('node-refill', 'premium');
  for (let i = 0; i < 25; i++) await pub.publish('backtest.limits', LIMITED_TYPE, { amount: String(i) });
  assert.equal(pub.stats().rate_limit_waits, 0, 'the whole burst went out without a wait');
  const r = await pub.publish('backtest.limits', LIMITED_TYPE, { amount: 'held' });
  const ackedAt = Date.now();
  assert.equal(r.attempts, 1, 'sent once: when the bucket had refilled');
  assert.ok(pub.stats().rate_limit_waits >= 1, 'the client held it');
  const records = await publishesNoneRefused('node-refill');
  assert.equal(records.length, 26, 'one request per event, none repeated');
  // The server's bucket gives one back a refill interval after the burst's first event, as
  // long as each burst event came within an interval of the one before (it did).
  const refill = records[0].at_ms + 2_400;
  assert.ok(records[25].at_ms >= refill - 50, `sent ${(refill - records[25].at_ms).toFixed(0)} ms before the refill`);
  assert.ok(ackedAt <= refill + 1_500, `acked ${ackedAt - refill} ms after the refill`);
});

// client.history() against the real reference server: paging both ways, every start, typed
// events equal to live ones, both entry points, and errors as CourierError classes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as courier from '../dist/node.js';
import { CourierClient, AuthenticationError, ForbiddenChannelError, ValidationError, MAX_HISTORY_LIMIT } from '../dist/node.js';
import { CourierClient as SubscriberClient } from '../dist/subscriber-node.js';
import { ROOT, startServer, token } from './helpers.mjs';

const CHANNEL = 'backtest.history-ts';
const N = 120;
let server;
let other;
const clients = [];
const live = [];

function client(options = {}, Client = CourierClient) {
  const c = new Client({ url: server.wsUrl, token: token({ sub: 'svc', role: 'service' }), ...options });
  clients.push(c);
  return c;
}

async function all(iterable) {
  const pages = [];
  for await (const page of iterable) pages.push(page);
  return pages;
}

before(async () => {
  [server, other] = await Promise.all([startServer(), startServer()]);
  const publisher = client();
  const sub = publisher.subscribe(CHANNEL, (e) => live.push(e));
  await sub.ready;
  for (let i = 0; i < N; i++) {
    publisher.publish(CHANNEL, 'backtest.progress', { backtest_id: 'b1', percent: i % 101 }).catch(() => {});
  }
  await publisher.flush();
  assert.equal(publisher.deadLetters().length, 0);
  const deadline = Date.now() + 10_000;
  while (live.length < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(live.length, N);
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all([server?.stop(), other?.stop()]);
});

test('forwards from the oldest: every event once, in order, equal to the live ones', async () => {
  const pages = await all(client().history(CHANNEL, { limit: 50 }));
  assert.deepEqual(pages.map((p) => p.events.length), [50, 50, 20]);
  assert.deepEqual(pages.map((p) => p.next === null), [false, false, true]);
  const events = pages.flatMap((p) => p.events);
  assert.deepEqual(events.map((e) => e.offset), live.map((e) => e.offset));
  // Typed like live events: the same envelope, epoch and offset included.
  assert.deepEqual(events, live);
  assert.equal(pages[0].channel, CHANNEL);
  assert.equal(pages[0].latest, live.at(-1).offset);
  assert.equal(pages[0].epoch, live[0].epoch);
});

test('backwards from the newest, and from before an offset', async () => {
  const c = client();
  const back = (await all(c.history(CHANNEL, { direction: 'backward', limit: 70 }))).flatMap((p) => p.events);
  assert.deepEqual(back.map((e) => e.offset), live.map((e) => e.offset).reverse());
  const mid = live[60].offset;
  const before = (await all(c.history(CHANNEL, { before: mid, limit: 1000 }))).flatMap((p) => p.events);
  assert.deepEqual(before.map((e) => e.offset), live.slice(0, 60).map((e) => e.offset).reverse());
});

test('after, since and a cursor start where they say', async () => {
  const c = client();
  const after = (await all(c.history(CHANNEL, { after: live[99].offset }))).flatMap((p) => p.events);
  assert.deepEqual(after.map((e) => e.offset), live.slice(100).map((e) => e.offset));
  const since = (await all(c.history(CHANNEL, { since: new Date(live[0].metadata.timestamp) }))).flatMap((p) => p.events);
  assert.equal(since[0].offset, live[0].offset);
  assert.equal(since.length, N);
  // A page's `next` continues in a new iteration (e.g. after a page reload).
  const first = await c.history(CHANNEL, { limit: 30 }).next();
  const rest = (await all(c.history(CHANNEL, { cursor: first.value.next, limit: 100 }))).flatMap((p) => p.events);
  assert.deepEqual(rest.map((e) => e.offset), live.slice(30).map((e) => e.offset));
});

test('the subscriber entry point pages too (no WebSocket opened)', async () => {
  const c = client({}, SubscriberClient);
  const events = (await all(c.history(CHANNEL, { limit: MAX_HISTORY_LIMIT }))).flatMap((p) => p.events);
  assert.equal(events.length, N);
  assert.equal(c.state, 'disconnected');
});

test('bad options throw a ValidationError naming the option before anything is sent', async () => {
  const c = client();
  for (const [options, field] of [
    [{ limit: 0 }, 'limit'],
    [{ limit: 1001 }, 'limit'],
    [{ limit: 2.5 }, 'limit'],
    [{ before: 0 }, 'before'],
    [{ after: -1 }, 'after'],
    [{ after: 1, before: 5 }, 'before'],
    [{ cursor: '' }, 'cursor'],
    [{ since: 'yesterday' }, 'since'],
    [{ after: 3, direction: 'backward' }, 'direction'],
  ]) {
    await assert.rejects(c.history(CHANNEL, options).next(), (e) => e instanceof ValidationError && e.field === field, JSON.stringify(options));
  }
  await assert.rejects(c.history('', {}).next(), (e) => e instanceof ValidationError && e.field === 'channel');
});

test("the server's refusals are CourierError classes", async () => {
  const user = client({ token: token({ sub: 'u1' }) });
  await assert.rejects(user.history(CHANNEL).next(), (e) => e instanceof ForbiddenChannelError && e.status === 403 && e.code === 'FORBIDDEN_CHANNEL');
  // A user reads its own channel.
  assert.equal((await all(user.history('user.u1'))).length, 1);
  const bad = client({ token: 'not-a-jwt' });
  await assert.rejects(bad.history(CHANNEL).next(), (e) => e instanceof AuthenticationError && e.status === 401);
  // A cursor of another server's epoch: 409 EPOCH_CHANGED, a ValidationError.
  const first = await client().history(CHANNEL, { limit: 10 }).next();
  const elsewhere = new CourierClient({ url: other.wsUrl, token: token({ sub: 'svc', role: 'service' }) });
  clients.push(elsewhere);
  await assert.rejects(
    elsewhere.history(CHANNEL, { cursor: first.value.next }).next(),
    (e) => e instanceof ValidationError && e.code === 'EPOCH_CHANGED' && e.status === 409,
  );
});

/** Runs `f` with `globalThis.fetch` answering every request with `answer(url)`; the URLs asked. */
async function withFetch(answer, f) {
  const real = globalThis.fetch;
  const urls = [];
  globalThis.fetch = async (url, init) => {
    urls.push(String(url));
    return answer(String(url), init);
  };
  try {
    await f();
  } finally {
    globalThis.fetch = real;
  }
  return urls;
}

test("every wire error code comes out with the core's category, retryable and class (errors vector)", async () => {
  const vector = JSON.parse(readFileSync(join(ROOT, 'tests', 'vectors', 'errors.json'), 'utf8'));
  const wire = vector.cases.filter((r) => r.wire);
  assert.ok(wire.length >= 10);
  for (const row of wire) {
    let tokens = 0;
    const c = client({ token: () => `t${++tokens}` });
    const body = JSON.stringify({ error: { code: row.code, message: 'refused', field: 'f' } });
    const urls = await withFetch(
      () => new Response(body, { status: 400 }),
      () =>
        assert.rejects(c.history(CHANNEL).next(), (e) => {
          assert.ok(e instanceof courier[row.typescript], `${row.code}: ${e.constructor.name}, not ${row.typescript}`);
          assert.deepEqual([e.code, e.category, e.retryable, e.status, e.field], [row.code, row.category, row.retryable, 400, 'f']);
          return true;
        }),
    );
    // An expired token is renewed and the page asked once more (as the Rust client does).
    const asked = row.code === 'TOKEN_EXPIRED' ? 2 : 1;
    assert.equal(urls.length, asked, row.code);
    assert.equal(tokens, asked, row.code);
    assert.equal(urls[0], `${server.httpUrl}/history/${CHANNEL}?limit=100`);
  }
});

test('answers without an error body get the code their status implies; a broken page is a protocol error', async () => {
  const c = client();
  for (const [status, body, code, Class] of [
    [503, '<html>busy</html>', 'UNAVAILABLE', courier.ServerError],
    [403, '', 'FORBIDDEN_CHANNEL', ForbiddenChannelError],
    [200, '{"channel":', 'PROTOCOL_ERROR', courier.CourierConnectionError],
    [200, '{"events":[]}', 'PROTOCOL_ERROR', courier.CourierConnectionError],
  ]) {
    await withFetch(
      () => new Response(body, { status }),
      () => assert.rejects(c.history(CHANNEL).next(), (e) => e instanceof Class && e.code === code, `${status} ${body}`),
    );
  }
  // No answer at all: a TransportError naming the request.
  const failing = async () => {
    throw new TypeError('fetch failed');
  };
  const real = globalThis.fetch;
  globalThis.fetch = failing;
  try {
    await assert.rejects(c.history(CHANNEL).next(), (e) => e instanceof courier.TransportError && e.retryable && /fetch failed/.test(e.message));
  } finally {
    globalThis.fetch = real;
  }
  // A token provider that fails: a TransportError saying so, nothing sent.
  const failingToken = client({ token: () => Promise.reject(new Error('vault down')) });
  const urls = await withFetch(
    () => new Response('{}', { status: 500 }),
    () =>
      assert.rejects(failingToken.history(CHANNEL).next(), (e) => e instanceof courier.TransportError && /token provider failed: vault down/.test(e.message)),
  );
  assert.deepEqual(urls, []);
});

test('an abort ends the iteration with its reason', async () => {
  const c = client();
  const controller = new AbortController();
  const reason = new Error('stop');
  controller.abort(reason);
  await assert.rejects(c.history(CHANNEL, { signal: controller.signal }).next(), (e) => e === reason);
  // Aborted between pages: the pages before it came.
  const later = new AbortController();
  const pages = [];
  await assert.rejects(
    (async () => {
      for await (const page of c.history(CHANNEL, { limit: 50, signal: later.signal })) {
        pages.push(page);
        later.abort(reason);
      }
    })(),
    (e) => e === reason,
  );
  assert.equal(pages.length, 1);
});

test('a page that never comes fails after requestTimeoutMs with a TransportError', async () => {
  const c = client({ requestTimeoutMs: 150 });
  // A fetch that answers only to its abort, as a server that never answers would.
  const urls = await withFetch(
    (_url, init) =>
      new Promise((_resolve, reject) => init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))),
    () =>
      assert.rejects(
        c.history(CHANNEL).next(),
        (e) => e instanceof courier.TransportError && e.retryable && /no answer within 150 ms/.test(e.message),
      ),
  );
  assert.equal(urls.length, 1);
  // The caller's own abort still wins with its reason.
  const controller = new AbortController();
  const reason = new Error('mine');
  await withFetch(
    (_url, init) =>
      new Promise((_resolve, reject) => init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')))),
    () => {
      setTimeout(() => controller.abort(reason), 20);
      return assert.rejects(c.history(CHANNEL, { signal: controller.signal }).next(), (e) => e === reason);
    },
  );
});

// React hooks under StrictMode (development build: effects mount, unmount and mount again),
// rendered with react-dom into jsdom, against the real server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><div id="root"></div>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
if (!globalThis.navigator) globalThis.navigator = dom.window.navigator;
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

const React = await import('react');
const { createRoot } = await import('react-dom/client');
const { CourierClient } = await import('../dist/node.js');
const { CourierClient: SubscriberClient } = await import('../dist/subscriber-node.js');
const { CourierProvider, useChannel, useConnectionState } = await import('../dist/react.js');
const { startServer, token, until, sleep } = await import('./helpers.mjs');

const h = React.createElement;
let server;
let sub;
let pub;
let subscriber;
let subscriberOnly;

before(async () => {
  server = await startServer();
  sub = new CourierClient({ url: server.wsUrl, token: token({ sub: 'alice', channels: ['backtest.*'] }) });
  pub = new CourierClient({ url: server.wsUrl, token: token({ sub: 'svc', role: 'service' }) });
  subscriber = sub;
  subscriberOnly = new SubscriberClient({ url: server.wsUrl, token: token({ sub: 'alice', channels: ['backtest.*'] }) });
});
after(async () => {
  sub?.close();
  pub?.close();
  subscriberOnly?.close();
  await server?.stop();
});

// The hooks take the client of either entry point.
for (const entry of ['courier-client', 'courier-client/subscriber']) {
test(`StrictMode (${entry}): one subscription per mounted hook, no handler after unmount`, async () => {
  const channel = entry === 'courier-client' ? 'backtest.react' : 'backtest.react-sub';
  const sub = entry === 'courier-client' ? subscriber : subscriberOnly;
  const received = [];
  const states = [];
  function Progress({ channel }) {
    const state = useConnectionState();
    states.push(state);
    useChannel(channel, (e) => {
      if (e.type === 'backtest.progress') received.push(e.data.percent);
    });
    return h('p', null, `${state}`);
  }
  const root = createRoot(document.getElementById('root'));
  await React.act(async () => {
    root.render(h(React.StrictMode, null, h(CourierProvider, { client: sub }, h(Progress, { channel }))));
  });
  assert.equal(sub.listenerCount(channel), 1, 'mount, unmount, mount leaves exactly one subscription');
  await until(() => sub.state === 'connected', { what: 'connected' });
  await sleep(50);
  await React.act(async () => {
    await pub.publish(channel, 'backtest.progress', { backtest_id: 'react', percent: 10 });
    await until(() => received.length === 1, { what: 'first event' });
  });
  assert.equal(document.querySelector('p').textContent, 'connected');
  assert.ok(states.includes('connected'));

  await React.act(async () => root.unmount());
  assert.equal(sub.listenerCount(channel), 0);
  await pub.publish(channel, 'backtest.progress', { backtest_id: 'react', percent: 20 });
  await sleep(200);
  assert.deepEqual(received, [10], 'exactly one delivery while mounted, none after unmount');
});
}

test('useChannel follows a new channel and the latest handler', async () => {
  const seen = [];
  function View({ channel, tag }) {
    useChannel(channel, (e) => seen.push(`${tag}:${e.channel}`));
    return null;
  }
  const root = createRoot(document.createElement('div'));
  await React.act(async () => {
    root.render(h(React.StrictMode, null, h(CourierProvider, { client: sub }, h(View, { channel: 'backtest.a1', tag: 'v1' }))));
  });
  await React.act(async () => {
    root.render(h(React.StrictMode, null, h(CourierProvider, { client: sub }, h(View, { channel: 'backtest.a2', tag: 'v2' }))));
  });
  assert.equal(sub.listenerCount('backtest.a1'), 0);
  assert.equal(sub.listenerCount('backtest.a2'), 1);
  await sleep(100);
  await React.act(async () => {
    await pub.publish('backtest.a2', 'custom.x', {});
    await until(() => seen.length === 1, { what: 'event on the new channel' });
  });
  assert.deepEqual(seen, ['v2:backtest.a2']);
  await React.act(async () => root.unmount());
});

test('two components on one channel both get each event (two core listeners)', async () => {
  const seen = [];
  function View({ tag }) {
    useChannel('backtest.shared', (e) => seen.push(`${tag}:${e.data.n}`));
    return null;
  }
  const root = createRoot(document.createElement('div'));
  await React.act(async () => {
    root.render(h(React.StrictMode, null, h(CourierProvider, { client: sub }, h(View, { tag: 'a' }), h(View, { tag: 'b' }))));
  });
  assert.equal(sub.listenerCount('backtest.shared'), 2);
  await sleep(100);
  await React.act(async () => {
    await pub.publish('backtest.shared', 'custom.x', { n: 1 });
    await until(() => seen.length === 2, { what: 'the event in both components' });
  });
  assert.deepEqual(seen.sort(), ['a:1', 'b:1']);
  await React.act(async () => root.unmount());
  assert.equal(sub.listenerCount('backtest.shared'), 0);
});

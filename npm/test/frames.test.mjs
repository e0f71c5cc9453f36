// The per-event path against a scripted server (a fake WebSocket the test drives): event
// frames the facade's `readEvent` takes go through the core's position decision; frames it
// does not take (wrong shapes) go to the core whole, which reports them as protocol errors.
// Duplicates, gaps and channel/epoch changes are decided the same either way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CourierClient } from '../dist/node.js';

let socket;
class ScriptedWebSocket {
  constructor() {
    socket = this;
    this.sent = [];
    setTimeout(() => this.onopen?.({}), 0);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {}
  receive(frame) {
    this.onmessage?.({ data: typeof frame === 'string' ? frame : JSON.stringify(frame) });
  }
}

const until = async (ok, what) => {
  const end = Date.now() + 3000;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

const event = (channel, epoch, offset, extra = {}) => ({
  op: 'event',
  epoch,
  offset,
  event: { id: `id-${channel}-${offset}`, type: 'custom.n', channel, data: { offset }, metadata: { timestamp: 1 } },
  ...extra,
});

test('events by position: in order, duplicates dropped, gaps and epoch changes reported, bad shapes refused by the core', async () => {
  const client = new CourierClient({ url: 'ws://127.0.0.1:9', token: 't', WebSocket: ScriptedWebSocket });
  try {
    await script(client);
  } finally {
    client.close();
  }
});

async function script(client) {
  const got = [];
  const gaps = [];
  const errors = [];
  client.on('gap', (g) => gaps.push(g));
  client.on('error', (e) => errors.push(e.code));
  const a = client.subscribe('backtest.a', (e) => got.push(['a', e.channel, e.epoch, e.offset, e.data.offset]));
  const b = client.subscribe('backtest.b', (e) => got.push(['b', e.channel, e.epoch, e.offset]));
  await until(() => socket?.sent.some((f) => f.op === 'connect'), 'connect frame');
  socket.receive({ op: 'connected', session: 's', epoch: 'E', ping_interval_ms: 15000, limits: { max_payload_bytes: 1000, max_frame_bytes: 100000, max_subscriptions: 10 } });
  await until(() => socket.sent.filter((f) => f.op === 'subscribe').length === 2, 'subscribe frames');
  for (const f of socket.sent.filter((f) => f.op === 'subscribe')) {
    socket.receive({ op: 'subscribed', id: f.id, channel: f.channel, recovered: true, epoch: 'E', offset: 0 });
  }
  await a.ready;
  await b.ready;

  socket.receive(event('backtest.a', 'E', 1));
  socket.receive(event('backtest.a', 'E', 1)); // a duplicate
  socket.receive(event('backtest.b', 'E', 1)); // another channel
  socket.receive(event('backtest.a', 'E', 2));
  socket.receive(event('backtest.a', 'E', 5)); // offsets 3..4 skipped
  socket.receive(event('backtest.a', 'F', 1)); // another epoch
  socket.receive(event('backtest.nobody', 'E', 9)); // not subscribed: dropped
  assert.deepEqual(got, [
    ['a', 'backtest.a', 'E', 1, 1],
    ['b', 'backtest.b', 'E', 1],
    ['a', 'backtest.a', 'E', 2, 2],
    ['a', 'backtest.a', 'E', 5, 5],
    ['a', 'backtest.a', 'F', 1, 1],
  ]);
  assert.deepEqual(gaps.map((g) => [g.reason, g.last, g.position]), [
    ['offset_skipped', { epoch: 'E', offset: 2 }, { epoch: 'E', offset: 4 }],
    ['epoch_changed', { epoch: 'E', offset: 5 }, { epoch: 'F', offset: 0 }],
  ]);
  assert.equal(client.stats().duplicates_dropped, 1);
  assert.deepEqual(errors, []);

  // Shapes `readEvent` does not take go to the core whole, which refuses them.
  socket.receive(event('backtest.a', 'F', '2'));
  await until(() => errors.length >= 1, 'a protocol error');
  assert.ok(errors.every((c) => c === 'PROTOCOL_ERROR'), errors.join());
  assert.equal(got.length, 5, 'a malformed event is never delivered');
}

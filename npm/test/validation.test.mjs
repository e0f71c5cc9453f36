// Catalogue validation in the shipped WASM: `publish` of bad catalogue data rejects with a
// ValidationError naming the field before any request is made. No server: `fetch` and the
// WebSocket are fakes that count their calls (a valid publish must reach the fake `fetch`,
// which shows the count would see a request).
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { CourierClient, ValidationError } from '../dist/node.js';

let requests;
let sockets;
let realFetch;
const clients = [];

class FakeWebSocket {
  constructor() {
    sockets += 1;
  }
  close() {}
}

beforeEach(() => {
  requests = [];
  sockets = 0;
  realFetch = globalThis.fetch;
  // Never answers: the client only has to hand the request over.
  globalThis.fetch = (url, init) => {
    requests.push({ url: String(url), body: init?.body });
    return new Promise(() => {});
  };
});
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  globalThis.fetch = realFetch;
});

function client() {
  const c = new CourierClient({ url: 'ws://127.0.0.1:9/ws', token: 't', WebSocket: FakeWebSocket, publish: { lingerMs: 0 } });
  clients.push(c);
  return c;
}

const until = async (ok, ms = 2000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

const cases = [
  ['a misspelt key (the required `percent` is then missing)', 'backtest.progress', { backtest_id: 'a', percnt: 1 }, 'data.percent', 'missing'],
  ['a wrong type', 'backtest.progress', { backtest_id: 'a', percent: '50' }, 'data.percent', 'wrong_type'],
  ['out of range', 'backtest.progress', { backtest_id: 'a', percent: 100.5 }, 'data.percent', 'out_of_range'],
  ['a bad decimal string', 'trade.executed', { trade_id: 't', symbol: 'X', side: 'buy', quantity: '1', price: '1e3' }, 'data.price', 'bad_format'],
  ['a wrong type in an array item', 'backtest.started', { backtest_id: 'b', strategy_id: 's', symbols: ['A', 7] }, 'data.symbols[1]', 'wrong_type'],
  ['a bad enum value', 'order.placed', { order_id: 'o', symbol: 'X', side: 'buy', order_type: 'iceberg', quantity: '1' }, 'data.order_type', 'wrong_type'],
];

for (const [name, type, data, field, kind] of cases) {
  test(`publish refuses ${name} before any request`, async () => {
    const c = client();
    await assert.rejects(c.publish('backtest.a', type, data), (e) => {
      assert.ok(e instanceof ValidationError, String(e));
      assert.equal(e.code, 'INVALID_EVENT');
      assert.equal(e.field, field);
      assert.match(e.message, new RegExp(field.replace(/^data\./, '').replace(/[[\]]/g, '\\$&')));
      return true;
    });
    assert.ok(kind);
    // Give any request a chance to start: none may.
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(requests, []);
    assert.equal(sockets, 0);
    assert.equal(c.stats().acknowledged, 0);
  });
}

test('a valid publish does reach fetch (the fake sees requests)', async () => {
  const c = client();
  c.publish('backtest.a', 'backtest.progress', { backtest_id: 'a', percent: 50 }).catch(() => {});
  await until(() => requests.length === 1);
  assert.match(requests[0].url, /\/publish\/batch$/);
  assert.match(requests[0].body, /"percent":50/);
});

// Compiled by types.test.mjs with `tsc --noEmit`: what must type-check, and (marked with
// the expect-error directive) what must not. An unused directive fails the compile too.
import { CourierClient, type CourierEvent, type CustomEvent, type PublishResult, type ClientStats, CourierError } from 'courier-client';
import { CourierProvider, useChannel, useConnectionState, useCourier } from 'courier-client/react';

const client = new CourierClient({ url: 'ws://localhost:8766', token: async () => 'jwt', reconnect: { minDelayMs: 100, maxDelayMs: 5000 } });

client.subscribe('backtest.abc', (e) => {
  if (e.type === 'backtest.progress') {
    const p: number | undefined = e.data.percent;
    void p;
    // @ts-expect-error: no such field on backtest.progress
    void e.data.percnt;
  }
  if (e.type === 'trade.executed') {
    const price: string = e.data.price;
    const side: 'buy' | 'sell' = e.data.side;
    void price, side;
  }
  // @ts-expect-error: a typo in an event type does not type-check
  if (e.type === 'backtest.progres') return;
  const offset: number = e.offset;
  void offset;
});

client.subscribe<CustomEvent<'my.thing', { n: number }>>('global', (e) => {
  const n: number = e.data.n;
  void n;
});

const r: Promise<PublishResult> = client.publish('backtest.abc', 'backtest.progress', { backtest_id: 'abc', percent: 5 }, { priority: 'high', idempotencyKey: 'k1' });
void r;
client.publish('backtest.abc', 'custom.anything', { free: 'form' });
// @ts-expect-error: percent is a number
client.publish('backtest.abc', 'backtest.progress', { backtest_id: 'abc', percent: 'five' });

client.on('state', (s) => {
  const ok: 'disconnected' | 'connecting' | 'connected' | 'closed' = s;
  void ok;
});
client.on('error', (e) => {
  const code: string = e.code;
  const after: number | undefined = e.retryAfterMs;
  void code, after, (e instanceof CourierError);
});
client.on('gap', (g) => void g.reason);
// @ts-expect-error: no such client event
client.on('nope', () => {});
const stats: ClientStats = client.stats();
void stats.rate_limit_waits;
// @ts-expect-error: the names are the core's (snake_case)
void stats.rateLimitWaits;
const sourced = new CourierClient({ url: 'https://courier.example/api', token: 'jwt', serviceName: 'billing' });
void sourced;

function Progress(): null {
  useCourier();
  const state = useConnectionState();
  void state;
  useChannel('backtest.abc', (e: CourierEvent) => {
    if (e.type === 'backtest.progress') void e.data.percent;
  });
  return null;
}
void CourierProvider, Progress;

// The subscriber entry point: the same subscribing API, typed the same, and no `publish`.
import { CourierClient as SubscriberClient } from 'courier-client/subscriber';
const listener = new SubscriberClient({ url: 'http://localhost:8766', token: 'jwt' });
const live = listener.subscribe('backtest.abc', (e) => {
  if (e.type === 'backtest.progress') {
    const p: number | undefined = e.data.percent;
    void p;
  }
});
const ready: Promise<{ epoch: string; offset: number }> = live.ready;
void ready;
// @ts-expect-error: the subscriber entry point does not publish
void listener.publish;
// The React hooks take either client.
void CourierProvider({ client: listener });
const listenerStats: ClientStats = listener.stats();
void listenerStats;

// history(): pages of events typed like live ones, from both entry points.
async function readHistory(): Promise<void> {
  for await (const page of listener.history('backtest.abc', { direction: 'backward', limit: 50 })) {
    const next: string | null = page.next;
    void next;
    for (const e of page.events) {
      const offset: number = e.offset;
      void offset;
      if (e.type === 'backtest.progress') {
        const p: number | undefined = e.data.percent;
        void p;
        // @ts-expect-error: no such field on backtest.progress
        void e.data.nope;
      }
    }
  }
  // @ts-expect-error: the direction is forward or backward
  void listener.history('backtest.abc', { direction: 'sideways' });
}
void readHistory;

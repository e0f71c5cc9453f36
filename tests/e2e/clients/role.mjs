// The e2e role for the TypeScript package, shared by the Node client (client.mjs) and the
// browser page (browser.html): subscribe to every channel of the scenario, say `ready`,
// publish this client's share on the scenario's schedule once told `go`, say `published` after
// every event is acknowledged or dead-lettered, and on `stop` wait for the stream to go
// quiet, then say `done`.
//
// `write(record)` receives one JSON-able record per event, gap, ack and dead letter.

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function runRole({ CourierClient, url, token, scenario, name, write, status, go, stop, WebSocket }) {
  const opts = scenario.client_options;
  const client = new CourierClient({
    url,
    token,
    ...(WebSocket ? { WebSocket } : {}),
    reconnect: { minDelayMs: opts.backoff.min_delay_ms, baseDelayMs: opts.backoff.base_delay_ms, maxDelayMs: opts.backoff.max_delay_ms },
    publish: { maxInFlight: opts.max_in_flight, maxAttempts: opts.max_attempts, maxBatchEvents: opts.max_batch_events, maxQueued: 100_000 },
    clientName: `e2e-${name}`,
  });
  let lastActivity = Date.now();
  let connected = false;
  client.on('state', (s) => {
    write({ k: 'state', state: s, t: Date.now() });
    if (s === 'connected') connected = true;
  });
  client.on('gap', (g) => {
    lastActivity = Date.now();
    write({ k: 'gap', ch: g.channel, reason: g.reason, last: g.last ?? null, pos: g.position });
  });
  for (const ch of scenario.channels) {
    client.subscribe(ch, (e) => {
      lastActivity = Date.now();
      write({ k: 'event', ch: e.channel, epoch: e.epoch, offset: e.offset, id: e.id });
    });
  }
  client.connect();
  const t0 = Date.now();
  while (!connected) {
    if (Date.now() - t0 > 20_000) throw new Error('not connected within 20 s');
    await sleep(20);
  }
  await sleep(500); // the subscribe frames went out with the connection; let them be confirmed
  status('ready');

  await go;
  // The orchestrator resolved the scenario's streams into ticks of
  // `{at_ms, events: [[seq, channel, type], ...]}` (tests/e2e/harness.py).
  const start = Date.now();
  const pending = [];
  for (const tick of scenario.schedule) {
    await sleep(Math.max(0, start + tick.at_ms - Date.now()));
    for (const [seq, ch, type] of tick.events) {
      const id = `${name}-${seq}`;
      const sent = Date.now();
      pending.push(
        client.publish(ch, type, { client: name, seq }, { idempotencyKey: id }).then(
          (r) => write({ k: 'ack', id, ch, epoch: r.epoch, offset: r.offset, dup: r.duplicate, attempts: r.attempts, sent, t: Date.now() }),
          (err) => write({ k: 'dead', id, ch, code: err.code ?? 'UNKNOWN', message: String(err.message ?? err), attempts: null, sent, t: Date.now() }),
        ),
      );
    }
  }
  await Promise.all(pending);
  await client.flush();
  for (const d of client.deadLetters()) {
    write({ k: 'dead_letter', id: d.id, ch: d.channel, code: d.error?.code ?? 'UNKNOWN', message: String(d.error?.message ?? ''), attempts: d.attempts });
  }
  status('published');

  await stop;
  while (Date.now() - lastActivity < 2_000) await sleep(100);
  const s = client.stats();
  write({ k: 'summary', stats: { reconnects: s.reconnects, gaps: s.gaps, duplicates_dropped: s.duplicatesDropped, rate_limit_waits: s.rateLimitWaits, retries: s.retries, dead: s.dead, acknowledged: s.acknowledged } });
  client.close();
  status('done');
}

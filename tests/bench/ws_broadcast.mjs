// A bare Node `ws` broadcast server: the baseline of the fan-out comparison
// (tests/bench/bench_server_vs_node.py, `fanout --server node`).
//
// It speaks only what the fan-out load generator needs: `connect` -> `connected`,
// `subscribe` -> `subscribed` (one channel for everyone), `ping` -> `pong`, and
// `POST /publish/batch`, which stringifies each event once into an `event` frame (one
// Buffer) and `ws.send`s it to every subscriber (ws's defaults: TCP_NODELAY on, no compression). No
// auth, validation, history, rate limits or ordering locks: the least a broadcast costs.
// Prints `listening on 127.0.0.1:<port>` once bound to a free loopback port.
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(new URL('../../npm/package.json', import.meta.url));
const { WebSocketServer } = require('ws');

const subscribers = new Set();
let offset = 0;

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/publish/batch') {
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":{"code":"BAD_REQUEST","message":"not found"}}');
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const { events } = JSON.parse(Buffer.concat(chunks).toString());
    const results = [];
    for (const event of events) {
      offset += 1;
      // One Buffer for everyone (a string would be encoded again for each subscriber).
      const frame = Buffer.from(JSON.stringify({ op: 'event', epoch: 'node', offset, event }));
      for (const ws of subscribers) ws.send(frame, { binary: false });
      results.push({ id: event.id, status: 'accepted', channel: event.channel, epoch: 'node', offset });
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ results }));
  });
});

// Keep the publisher's connections however long it pauses between phases (Node closes idle
// keep-alive connections after 5 s by default, racing the client's next request), and say
// why a connection is refused.
server.keepAliveTimeout = 0;
server.on('clientError', (e, socket) => {
  console.error('ws_broadcast: client error', e.code, e.message);
  socket.destroy();
});

const wss = new WebSocketServer({ server });
wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    const msg = JSON.parse(data.toString());
    if (msg.op === 'connect') {
      ws.send(JSON.stringify({ op: 'connected', session: 'node', epoch: 'node', ping_interval_ms: 0 }));
    } else if (msg.op === 'subscribe') {
      subscribers.add(ws);
      ws.send(JSON.stringify({ op: 'subscribed', id: msg.id, channel: msg.channel }));
    } else if (msg.op === 'ping') {
      ws.send('{"op":"pong"}');
    }
  });
  ws.on('close', () => subscribers.delete(ws));
});

server.listen(0, '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`listening on ${address}:${port}`);
});
process.on('SIGTERM', () => process.exit(0));

// A minimal protocol-v1 feed for the throughput benchmark: answers `connect` and `subscribe`,
// then streams N prebuilt `event` frames on the subscribed channel as fast as the socket
// takes them. Runs in its own process so it does not share the client's event loop.
import { WebSocketServer } from 'ws';

const total = Number(process.argv[2] ?? 200000);
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
const frame = (i) =>
  JSON.stringify({
    op: 'event', epoch: 'e1', offset: i,
    event: {
      id: `01JD3Z8Q4W6X9V2N5R7T${String(i).padStart(6, '0')}`, type: 'backtest.progress', channel: 'backtest.bench',
      data: { backtest_id: 'bench', percent: 42.5, processed: i, total, message: 'running' },
      metadata: { timestamp: 1732300000000, source: 'backtester' },
    },
  });
const frames = Array.from({ length: total }, (_, i) => frame(i + 1));

wss.on('connection', (ws) => {
  ws.on('message', (raw) => {
    const msg = JSON.parse(String(raw));
    if (msg.op === 'connect') {
      ws.send(JSON.stringify({ op: 'connected', session: 's1', epoch: 'e1', ping_interval_ms: 60000,
        limits: { max_payload_bytes: 102400, max_frame_bytes: 131072, max_subscriptions: 1024 } }));
    } else if (msg.op === 'subscribe') {
      ws.send(JSON.stringify({ op: 'subscribed', id: msg.id, channel: msg.channel, recovered: true, epoch: 'e1', offset: 0 }));
      let i = 0;
      const pump = () => {
        while (i < frames.length) {
          ws.send(frames[i++]);
          if (ws.bufferedAmount > 4 * 1024 * 1024) return setImmediate(pump);
        }
      };
      pump();
    }
  });
});
wss.on('listening', () => console.log(`listening on 127.0.0.1:${wss.address().port}`));

// Events/s received, decoded and handed to a handler on one connection: courier-client
// (WASM core: decode, dedupe, position, then JSON.parse in JS) beside bare `ws` + JSON.parse,
// against the same feed in the same run. Prints JSON.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { CourierClient } from '../dist/node.js';

const total = Number(process.argv[2] ?? 200000);
const rounds = Number(process.argv[3] ?? 3);

function feed() {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./feed-server.mjs', import.meta.url)), String(total)], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => {
    child.stdout.on('data', (d) => {
      const m = String(d).match(/listening on (\S+)/);
      if (m) resolve({ url: `ws://${m[1]}`, stop: () => child.kill() });
    });
  });
}

function bare(url) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}/ws`);
    let n = 0;
    let start = 0;
    let sum = 0;
    const handler = (e) => { sum += e.data.percent; };
    ws.onopen = () => ws.send(JSON.stringify({ op: 'connect', token: 't' }));
    ws.onmessage = (m) => {
      const f = JSON.parse(m.data);
      if (f.op === 'connected') ws.send(JSON.stringify({ op: 'subscribe', id: 1, channel: 'backtest.bench' }));
      else if (f.op === 'event') {
        if (n === 0) start = performance.now();
        handler(f.event);
        if (++n === total) {
          const s = (performance.now() - start) / 1000;
          ws.close();
          resolve((total - 1) / s);
        }
      }
    };
  });
}

function courier(url) {
  return new Promise((resolve) => {
    const client = new CourierClient({ url, token: 't', WebSocket });
    let n = 0;
    let start = 0;
    let sum = 0;
    client.subscribe('backtest.bench', (e) => {
      if (n === 0) start = performance.now();
      if (e.type === 'backtest.progress') sum += e.data.percent ?? 0;
      if (++n === total) {
        const s = (performance.now() - start) / 1000;
        client.close();
        resolve((total - 1) / s);
      }
    });
    client.connect();
  });
}

const results = { total, rounds, bare: [], courier: [] };
for (let r = 0; r < rounds; r++) {
  for (const [name, run] of [['bare', bare], ['courier', courier]]) {
    const f = await feed();
    results[name].push(await run(f.url));
    f.stop();
  }
}
console.log(JSON.stringify(results));
process.exit(0);

// Serves the dashboard: the page at /, the package's browser build at /courier/ (with
// `application/wasm` for the .wasm), and /config.json with the server URL, token and channel.
//
//   node serve.mjs --ws ws://127.0.0.1:8766/ws --token "$JWT" [--channel backtest.demo] [--port 0]
//
// Prints `dashboard at http://127.0.0.1:PORT/` once listening.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = fileURLToPath(new URL('.', import.meta.url));
const dist = join(here, '../../npm/dist');
const { values: args } = parseArgs({
  options: {
    ws: { type: 'string', default: 'ws://127.0.0.1:8766/ws' },
    token: { type: 'string' },
    channel: { type: 'string', default: 'backtest.demo' },
    port: { type: 'string', default: '0' },
  },
});
const types = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json' };
const config = JSON.stringify({ url: args.ws, token: args.token ?? '', channel: args.channel });

const server = createServer(async (req, res) => {
  const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  if (path === '/config.json') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(config);
    return;
  }
  const [root, rest] = path.startsWith('/courier/') ? [dist, path.slice('/courier/'.length)] : [here, path === '/' ? 'index.html' : path.slice(1)];
  const file = normalize(join(root, rest));
  if (!file.startsWith(root)) {
    res.writeHead(403).end();
    return;
  }
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream' }).end(body);
  } catch {
    res.writeHead(404).end('not found');
  }
});
server.listen(Number(args.port), '127.0.0.1', () => {
  console.log(`dashboard at http://127.0.0.1:${server.address().port}/`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);

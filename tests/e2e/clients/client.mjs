// The Node e2e client: `node client.mjs SCENARIO NAME URL TOKEN OUT.jsonl`.
// Reads `go` and `stop` lines on stdin, prints `ready`, `published`, `done` on stdout.
import { readFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { CourierClient } from '../../../npm/dist/node.js';
import { runRole } from './role.mjs';

const [scenarioPath, name, url, token, out] = process.argv.slice(2);
const scenario = JSON.parse(readFileSync(scenarioPath, 'utf8'));
const fd = openSync(out, 'w');
let buf = [];
const flush = () => { if (buf.length) { writeSync(fd, buf.join('')); buf = []; } };
const timer = setInterval(flush, 200);
const write = (r) => { buf.push(JSON.stringify(r) + '\n'); };

let goResolve, stopResolve;
const go = new Promise((r) => { goResolve = r; });
const stop = new Promise((r) => { stopResolve = r; });
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l.trim() === 'go') goResolve();
  if (l.trim() === 'stop') stopResolve();
});
const status = (s) => { flush(); process.stdout.write(`${s}\n`); };

try {
  await runRole({ CourierClient, url, token, scenario, name, write, status, go, stop });
} finally {
  clearInterval(timer);
  flush();
  closeSync(fd);
}
process.exit(0);

// Shared helpers for the Node tests: the real reference server, tokens, waiting.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const NPM_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const ROOT = join(NPM_DIR, '..');
export const SERVER_BIN = process.env.COURIER_SERVER_BIN ?? join(ROOT, 'target', 'debug', 'courier-server');

if (!existsSync(SERVER_BIN)) {
  throw new Error(`${SERVER_BIN} is missing: run \`cargo build -p courier-server\` (make test-npm does)`);
}

/**
 * Starts `courier-server serve` with fault injection on loopback; resolves once it printed
 * `listening on <addr>`. `listen` defaults to port 0; pass an address to restart on it.
 */
export function startServer({ listen = '127.0.0.1:0', env = {} } = {}) {
  const child = spawn(SERVER_BIN, ['serve', '--listen', listen, '--enable-fault-injection'], {
    env: {
      ...process.env,
      COURIER_LOG_LEVEL: process.env.COURIER_TEST_LOG_LEVEL ?? 'warn',
      // Under `make test-sdk-redis` every server gets its own Redis namespace, like a fresh
      // deployment (a restart here is a new server, as in memory).
      ...(process.env.COURIER_BACKEND?.startsWith('redis') ? { COURIER_REDIS__KEY_PREFIX: `nodetest-${process.pid}-${Date.now()}-${Math.random()}:` } : {}),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`server did not start: ${stderr}`)), 15_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}: ${stderr}`));
    });
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        const addr = m[1];
        resolve({
          addr,
          wsUrl: `ws://${addr}`,
          httpUrl: `http://${addr}`,
          child,
          stderr: () => stderr,
          /** Graceful stop (SIGTERM); resolves when the process is gone. */
          stop(signal = 'SIGTERM') {
            return new Promise((res) => {
              if (child.exitCode !== null || child.signalCode !== null) return res();
              child.removeAllListeners('exit');
              child.on('exit', () => res());
              child.kill(signal);
            });
          },
        });
      }
    });
  });
}

/** A signed token from the server's CLI. */
export function token({ sub = 'tester', role = 'user', channels = [], publish = [], ttl, tier } = {}) {
  const args = ['token', '--sub', sub, '--role', role];
  if (channels.length) args.push('--channels', channels.join(','));
  if (publish.length) args.push('--publish', publish.join(','));
  if (ttl !== undefined) args.push('--ttl', String(ttl));
  if (tier) args.push('--tier', tier);
  return execFileSync(SERVER_BIN, args, { encoding: 'utf8' }).trim();
}

/** POST to the server's fault-injection API. */
export async function fault(server, path, body) {
  const res = await fetch(`${server.httpUrl}/_fault/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? '{}' : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`fault ${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

/** Resolves when `predicate()` is true, polling; rejects after `timeoutMs`. */
export async function until(predicate, { timeoutMs = 10_000, what = 'condition' } = {}) {
  const start = Date.now();
  for (;;) {
    if (await predicate()) return;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Node's WebSocket glue: the `ws` package when Node has no global `WebSocket` (before 22), and
 * the byte counts of `stats()` (`wire_bytes_*`) for sockets made by `ws`.
 */
import { setDefaultWebSocket, setWireCounter, type WebSocketConstructor, type WireCounter } from './base.js';

/** Makes `ws` the default constructor when Node has no global `WebSocket` and `ws` is installed. */
export async function useWsWhenNoGlobal(): Promise<void> {
  if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'function') return;
  try {
    const name = 'ws';
    const ws = (await import(name)) as { WebSocket?: WebSocketConstructor; default?: WebSocketConstructor };
    setDefaultWebSocket(ws.WebSocket ?? ws.default);
  } catch {
    // No `ws`: the constructor must then be passed in the options.
  }
}

/** A connection's socket that counts its bytes (Node's `net.Socket`). */
interface ByteSocket {
  bytesRead: number;
  bytesWritten: number;
  once(event: 'close', f: () => void): unknown;
}

/** What this module needs of a `ws` WebSocket. */
interface WsSocket {
  on(event: 'upgrade', f: (response: { socket: ByteSocket }) => void): unknown;
}

/**
 * The bytes on the wire of every WebSocket one client opens. `ws` hands over each
 * connection's socket in its documented `upgrade` event (`response.socket`, after the 101
 * response was read); a socket's final counts are kept when it closes, so the sums run
 * across reconnects.
 */
class Wire implements WireCounter {
  readonly #closed = { bytesRead: 0, bytesWritten: 0 };
  readonly #live = new Set<ByteSocket>();

  wrap(ctor: WebSocketConstructor): WebSocketConstructor {
    const track = (s: ByteSocket): void => {
      this.#live.add(s);
      s.once('close', () => {
        this.#live.delete(s);
        this.#closed.bytesRead += s.bytesRead;
        this.#closed.bytesWritten += s.bytesWritten;
      });
    };
    // A plain function: the driver calls it with `new`, which then returns `ws`'s socket.
    return function (url: string) {
      const ws = new (ctor as unknown as new (url: string) => WsSocket)(url);
      ws.on('upgrade', (response) => track(response.socket));
      return ws;
    } as unknown as WebSocketConstructor;
  }

  count(k: 'bytesRead' | 'bytesWritten'): number {
    let n = this.#closed[k];
    for (const s of this.#live) n += s[k];
    return n;
  }
}

/**
 * Counts the bytes of sockets made by an `EventEmitter` constructor (the `ws` package);
 * Node's own `WebSocket` exposes no socket, so its clients report `null`.
 */
export function countWireBytes(): void {
  setWireCounter((ctor) => (typeof (ctor.prototype as { on?: unknown } | undefined)?.on === 'function' ? new Wire() : undefined));
}

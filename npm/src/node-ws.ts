/** Node without a global `WebSocket` (before 22): the `ws` package when it is installed. */
import { setDefaultWebSocket, type WebSocketConstructor } from './base.js';

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

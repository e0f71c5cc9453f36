/**
 * Entry point for Node: loads the WebAssembly synchronously from disk, then exports the
 * client. Node 22+ has a global `WebSocket`; on Node 20 the `ws` package is used when it is
 * installed (`npm install ws`), or pass `WebSocket` in the options.
 */
import { readFileSync } from 'node:fs';
import { initSync } from './wasm/courier_wasm.js';
import { setDefaultWebSocket, setWasmMemory, type WebSocketConstructor } from './client.js';

setWasmMemory(initSync({ module: readFileSync(new URL('./wasm/courier_wasm_bg.wasm', import.meta.url)) }).memory);

if (typeof (globalThis as { WebSocket?: unknown }).WebSocket !== 'function') {
  try {
    const name = 'ws';
    const ws = (await import(name)) as { WebSocket?: WebSocketConstructor; default?: WebSocketConstructor };
    setDefaultWebSocket(ws.WebSocket ?? ws.default);
  } catch {
    // No `ws`: the constructor must then be passed in the options.
  }
}

export * from './index.js';

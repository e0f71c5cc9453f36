/**
 * Entry point for Node: loads the WebAssembly synchronously from disk, then exports the
 * client. Node 22+ has a global `WebSocket`; on Node 20 the `ws` package is used when it is
 * installed (`npm install ws`), or pass `WebSocket` in the options.
 */
import { readFileSync } from 'node:fs';
import { initSync } from './wasm/courier_wasm.js';
import { countWireBytes, useWsWhenNoGlobal } from './node-ws.js';

initSync({ module: readFileSync(new URL('./wasm/courier_wasm_bg.wasm', import.meta.url)) });
await useWsWhenNoGlobal();
countWireBytes();

export * from './index.js';

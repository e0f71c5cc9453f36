/** Entry point `courier-client/subscriber` for Node (see `node.ts`). */
import { readFileSync } from 'node:fs';
import { initSync } from './wasm-sub/courier_wasm.js';
import { countWireBytes, useWsWhenNoGlobal } from './node-ws.js';

initSync({ module: readFileSync(new URL('./wasm-sub/courier_wasm_bg.wasm', import.meta.url)) });
await useWsWhenNoGlobal();
countWireBytes();

export * from './subscriber-index.js';

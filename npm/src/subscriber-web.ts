/** Entry point `courier-client/subscriber` for browsers and web workers (see `web.ts`). */
import init from './wasm-sub/courier_wasm.js';

await init({ module_or_path: new URL('./wasm-sub/courier_wasm_bg.wasm', import.meta.url) });

export * from './subscriber-index.js';

/**
 * Entry point for browsers and web workers: loads the WebAssembly next to this file
 * (bundlers follow `new URL(…, import.meta.url)`), then exports the client.
 */
import init from './wasm/courier_wasm.js';

await init({ module_or_path: new URL('./wasm/courier_wasm_bg.wasm', import.meta.url) });

export * from './index.js';

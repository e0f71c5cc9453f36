/**
 * courier-client: the Courier realtime event bus for browsers, web workers and Node.
 *
 * Import `courier-client` (the runtime's entry point is picked by `exports`); this module
 * holds what its entry points re-export. `courier-client/subscriber` is the same API without
 * publishing, in a smaller download.
 */
export { CourierClient, endpoints } from './client.js';
export * from './common.js';

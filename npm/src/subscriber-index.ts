/**
 * courier-client/subscriber: the Courier client without publishing (the WASM is built
 * without the publish queue). The same API as `courier-client` for what both have.
 */
export { CourierClient, endpoints } from './subscriber.js';
export * from './common.js';

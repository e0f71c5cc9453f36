/**
 * `CourierClient` of the `courier-client/subscriber` entry point: `BaseClient` over the WASM
 * built without the publish queue (a smaller download for pages that only listen).
 */
import { CoreClient, HistoryPager, endpoints as coreEndpoints } from './wasm-sub/courier_wasm.js';
import { BaseClient, type CourierClientOptions } from './base.js';
import { errorFromThrown } from './errors.js';

/** The WebSocket URL the client derives from `url` (any form `CourierClient` accepts). */
export function endpoints(url: string, httpUrl?: string): { wsUrl: string } {
  try {
    return coreEndpoints(url, httpUrl);
  } catch (e) {
    throw errorFromThrown(e);
  }
}

/** The Courier client without publishing: subscribe to channels, never write reconnect code. */
export class CourierClient extends BaseClient {
  constructor(options: CourierClientOptions) {
    super(options, (o, host, hi, lo) => new CoreClient(o, host, hi, lo), HistoryPager);
  }
}

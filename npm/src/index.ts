/**
 * courier-client: the Courier realtime event bus for browsers, web workers and Node.
 *
 * Import `courier-client` (the runtime's entry point is picked by `exports`); this module
 * holds what every entry point re-exports.
 */
export {
  CourierClient,
  endpoints,
  setDefaultWebSocket,
  type ClientStats,
  type ConnectionState,
  type CourierClientEvents,
  type CourierClientOptions,
  type CourierEvent,
  type CustomEvent,
  type DeadLetter,
  type EventEnvelope,
  type Gap,
  type KnownEventType,
  type PublishOptions,
  type PublishResult,
  type StreamPosition,
  type SubscribeOptions,
  type Subscription,
  type TokenProvider,
  type WebSocketConstructor,
} from './client.js';
export {
  AuthenticationError,
  ConnectionClosedError,
  CourierConnectionError,
  CourierError,
  CourierTimeoutError,
  ForbiddenChannelError,
  PayloadTooLargeError,
  QueueFullError,
  RateLimitedError,
  ServerError,
  TransportError,
  UsageError,
  ValidationError,
  // Deprecated names of AuthenticationError, RateLimitedError, CourierConnectionError.
  AuthError,
  RateLimitError,
  ConnectionError,
  type CourierErrorDetails,
  type ErrorCategory,
} from './errors.js';
export type * from './events.generated.js';

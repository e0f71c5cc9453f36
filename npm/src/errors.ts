/**
 * Errors: every failure the client reports is a `CourierError` (a real `Error`) with a
 * machine-readable `code` and the `category` and `retryable` the Rust core decides for it.
 * One class per category, named as in the Python SDK (`tests/vectors/errors.json` lists every
 * code with its class; `test/errors.test.mjs` checks this module against it):
 *
 * ```text
 * CourierError                  unknown
 * ├─ ValidationError            validation: INVALID_EVENT, EPOCH_CHANGED
 * │  └─ PayloadTooLargeError    PAYLOAD_TOO_LARGE
 * ├─ AuthenticationError        authentication: UNAUTHORIZED, TOKEN_EXPIRED
 * │  └─ ForbiddenChannelError   authorization: FORBIDDEN_CHANNEL
 * ├─ RateLimitedError           rate_limited: RATE_LIMIT_EXCEEDED, CONNECTION_LIMIT_EXCEEDED
 * ├─ CourierConnectionError     connection: AUTH_TIMEOUT, SLOW_CONSUMER, BAD_REQUEST, …
 * │  └─ TransportError          TRANSPORT
 * ├─ ServerError                server: INTERNAL, UNAVAILABLE, SHUTTING_DOWN
 * └─ UsageError                 usage: ALREADY_SUBSCRIBED
 *    ├─ QueueFullError          QUEUE_FULL
 *    ├─ ConnectionClosedError   CLOSED
 *    └─ CourierTimeoutError     TIMEOUT
 * ```
 */

/** What the application can do about an error, as the core decides it. */
export type ErrorCategory =
  | 'validation'
  | 'authentication'
  | 'authorization'
  | 'rate_limited'
  | 'connection'
  | 'server'
  | 'usage'
  | 'unknown';

/** The error as it crosses from the core (snake_case JSON). */
export interface CoreErrorJson {
  code: string;
  category?: ErrorCategory;
  retryable?: boolean;
  message: string;
  retry_after_ms?: number;
  field?: string;
  status?: number;
  limit_type?: string;
}

/** The optional details of a `CourierError`. */
export type CourierErrorDetails = Partial<
  Pick<CourierError, 'category' | 'retryable' | 'retryAfterMs' | 'field' | 'status' | 'limitType'>
>;

/** Base class of every error this package throws or reports; alone, for a code this version does not know. */
export class CourierError extends Error {
  /** The category a class stands for when built without one. */
  static readonly defaultCategory: ErrorCategory = 'unknown';
  /** Machine-readable: `RATE_LIMIT_EXCEEDED`, `INVALID_EVENT`, `TRANSPORT`, `CLOSED`, … */
  readonly code: string;
  /** What the application can do about it, as the core decides (`rate_limited`, `validation`, …). */
  readonly category: ErrorCategory;
  /** Whether the same request may succeed if sent again unchanged, later (the core's answer). */
  readonly retryable: boolean;
  /** How long the server asked to wait, when it did (the client already honours it). */
  readonly retryAfterMs: number | undefined;
  /** The field at fault (`data.percent`, `channel`), for validation errors. */
  readonly field: string | undefined;
  /** The HTTP status, when the refusal came over HTTP. */
  readonly status: number | undefined;
  /** Which connection limit was hit, for `CONNECTION_LIMIT_EXCEEDED`. */
  readonly limitType: string | undefined;

  constructor(code: string, message: string, details: CourierErrorDetails = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.category = details.category ?? (new.target as typeof CourierError).defaultCategory;
    this.retryable = details.retryable ?? false;
    this.retryAfterMs = details.retryAfterMs;
    this.field = details.field;
    this.status = details.status;
    this.limitType = details.limitType;
  }
}

/** The caller gave bad input (`INVALID_EVENT`): fix it; never retried. */
export class ValidationError extends CourierError {
  static override readonly defaultCategory: ErrorCategory = 'validation';
}
/** The event is larger than the server accepts (`PAYLOAD_TOO_LARGE`). */
export class PayloadTooLargeError extends ValidationError {}
/** The token was refused (`UNAUTHORIZED`, `TOKEN_EXPIRED`): get a new one. */
export class AuthenticationError extends CourierError {
  static override readonly defaultCategory: ErrorCategory = 'authentication';
}
/** The token is good but does not grant this channel (`FORBIDDEN_CHANNEL`). */
export class ForbiddenChannelError extends AuthenticationError {
  static override readonly defaultCategory: ErrorCategory = 'authorization';
}
/** A rate or connection limit was hit (`RATE_LIMIT_EXCEEDED`, `CONNECTION_LIMIT_EXCEEDED`). */
export class RateLimitedError extends CourierError {
  static override readonly defaultCategory: ErrorCategory = 'rate_limited';
}
/**
 * The connection failed, stalled (`AUTH_TIMEOUT`, `SLOW_CONSUMER`) or broke the protocol
 * (`BAD_REQUEST`, `UNKNOWN_OP`, `PROTOCOL_ERROR`); the client reconnects by itself.
 */
export class CourierConnectionError extends CourierError {
  static override readonly defaultCategory: ErrorCategory = 'connection';
}
/** The network failed and retries did not help, or were not allowed (`TRANSPORT`). */
export class TransportError extends CourierConnectionError {}
/** The server could not serve right now (`INTERNAL`, `UNAVAILABLE`, `SHUTTING_DOWN`). */
export class ServerError extends CourierError {
  static override readonly defaultCategory: ErrorCategory = 'server';
}
/** The API was used in a way that cannot work (`ALREADY_SUBSCRIBED`, and the subclasses). */
export class UsageError extends CourierError {
  static override readonly defaultCategory: ErrorCategory = 'usage';
}
/** The publish queue is full: await `flush()` or raise `maxQueued` (`QUEUE_FULL`). */
export class QueueFullError extends UsageError {}
/** The client is closed (`CLOSED`). */
export class ConnectionClosedError extends UsageError {}
/** An operation did not finish within its timeout (`TIMEOUT`). */
export class CourierTimeoutError extends UsageError {}

/** @deprecated Renamed `AuthenticationError` (the Python SDK's name). */
export const AuthError = AuthenticationError;
/** @deprecated Renamed `RateLimitedError` (the Python SDK's name). */
export const RateLimitError = RateLimitedError;
/** @deprecated Renamed `CourierConnectionError` (the Python SDK's name). */
export const ConnectionError = CourierConnectionError;

// The class for each category the core decides, and the few codes with a class of their own.
const byCategory: Record<ErrorCategory, typeof CourierError> = {
  validation: ValidationError,
  authentication: AuthenticationError,
  authorization: ForbiddenChannelError,
  rate_limited: RateLimitedError,
  connection: CourierConnectionError,
  server: ServerError,
  usage: UsageError,
  unknown: CourierError,
};
const byCode: Record<string, typeof CourierError> = {
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  TRANSPORT: TransportError,
  QUEUE_FULL: QueueFullError,
  CLOSED: ConnectionClosedError,
  TIMEOUT: CourierTimeoutError,
};

/** The class thrown for `code`, whose `category` the core decided. */
export function errorClass(code: string, category: ErrorCategory | undefined): typeof CourierError {
  return byCode[code] ?? (category !== undefined ? byCategory[category] : undefined) ?? CourierError;
}

/** The `CourierError` subclass for a core error. */
export function errorFromCore(e: CoreErrorJson): CourierError {
  const Class = errorClass(e.code, e.category);
  return new Class(e.code, e.message, {
    category: e.category,
    retryable: e.retryable,
    retryAfterMs: e.retry_after_ms,
    field: e.field,
    status: e.status,
    limitType: e.limit_type,
  });
}

/** Turns what the driver threw (a core error object) into a `CourierError`. */
export function errorFromThrown(thrown: unknown): CourierError {
  if (thrown instanceof CourierError) return thrown;
  if (thrown !== null && typeof thrown === 'object' && !(thrown instanceof Error) && typeof (thrown as CoreErrorJson).code === 'string') {
    return errorFromCore(thrown as CoreErrorJson);
  }
  if (thrown instanceof Error) return new UsageError('INVALID_ARGUMENT', thrown.message);
  return new CourierError('UNKNOWN', String(thrown));
}

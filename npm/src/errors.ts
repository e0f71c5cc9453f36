/**
 * Errors: every failure the client reports is a `CourierError` (a real `Error`) with a
 * machine-readable `code`, grouped by what the caller can do about it.
 */

/** The error as it crosses from the core (snake_case JSON). */
export interface CoreErrorJson {
  code: string;
  message: string;
  retry_after_ms?: number;
  field?: string;
  status?: number;
  limit_type?: string;
}

/** Base class of every error this package throws or reports. */
export class CourierError extends Error {
  /** Machine-readable: `RATE_LIMIT_EXCEEDED`, `INVALID_EVENT`, `TRANSPORT`, `CLOSED`, … */
  readonly code: string;
  /** How long the server asked to wait, when it did (the client already honours it). */
  readonly retryAfterMs: number | undefined;
  /** The field at fault (`data.percent`, `channel`), for validation errors. */
  readonly field: string | undefined;
  /** The HTTP status, when the refusal came over HTTP. */
  readonly status: number | undefined;
  /** Which connection limit was hit, for `CONNECTION_LIMIT_EXCEEDED`. */
  readonly limitType: string | undefined;

  constructor(code: string, message: string, details: Partial<Pick<CourierError, 'retryAfterMs' | 'field' | 'status' | 'limitType'>> = {}) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.retryAfterMs = details.retryAfterMs;
    this.field = details.field;
    this.status = details.status;
    this.limitType = details.limitType;
  }
}

/** The caller gave bad input (`INVALID_EVENT`, `PAYLOAD_TOO_LARGE`): fix it; never retried. */
export class ValidationError extends CourierError {}
/** The token was refused (`UNAUTHORIZED`, `TOKEN_EXPIRED`, `FORBIDDEN_CHANNEL`). */
export class AuthError extends CourierError {}
/** The server rate-limited the request (`RATE_LIMIT_EXCEEDED`, `CONNECTION_LIMIT_EXCEEDED`). */
export class RateLimitError extends CourierError {}
/** The network or the protocol failed (`TRANSPORT`, `PROTOCOL_ERROR`, `BAD_REQUEST`, …). */
export class ConnectionError extends CourierError {}
/** The server could not serve (`INTERNAL`, `UNAVAILABLE`, `SHUTTING_DOWN`, `SLOW_CONSUMER`). */
export class ServerError extends CourierError {}
/** The API was used in a way that cannot work (`CLOSED`, `QUEUE_FULL`, `ALREADY_SUBSCRIBED`). */
export class UsageError extends CourierError {}

const classes: Record<string, typeof CourierError> = {
  INVALID_EVENT: ValidationError,
  PAYLOAD_TOO_LARGE: ValidationError,
  UNAUTHORIZED: AuthError,
  TOKEN_EXPIRED: AuthError,
  FORBIDDEN_CHANNEL: AuthError,
  RATE_LIMIT_EXCEEDED: RateLimitError,
  CONNECTION_LIMIT_EXCEEDED: RateLimitError,
  TRANSPORT: ConnectionError,
  PROTOCOL_ERROR: ConnectionError,
  BAD_REQUEST: ConnectionError,
  UNKNOWN_OP: ConnectionError,
  AUTH_TIMEOUT: ConnectionError,
  INTERNAL: ServerError,
  UNAVAILABLE: ServerError,
  SHUTTING_DOWN: ServerError,
  SLOW_CONSUMER: ServerError,
  UNKNOWN: ServerError,
  CLOSED: UsageError,
  QUEUE_FULL: UsageError,
  ALREADY_SUBSCRIBED: UsageError,
  TIMEOUT: UsageError,
};

/** The `CourierError` subclass for a core error. */
export function errorFromCore(e: CoreErrorJson): CourierError {
  const Class = classes[e.code] ?? CourierError;
  return new Class(e.code, e.message, {
    retryAfterMs: e.retry_after_ms,
    field: e.field,
    status: e.status,
    limitType: e.limit_type,
  });
}

/** Turns what the driver threw (a core error as JSON text) into a `CourierError`. */
export function errorFromThrown(thrown: unknown): CourierError {
  if (thrown instanceof CourierError) return thrown;
  if (typeof thrown === 'string' && thrown.startsWith('{')) return errorFromCore(JSON.parse(thrown) as CoreErrorJson);
  if (thrown instanceof Error) return new UsageError('INVALID_ARGUMENT', thrown.message);
  return new CourierError('UNKNOWN', String(thrown));
}

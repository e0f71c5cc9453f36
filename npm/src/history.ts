/**
 * `client.history(channel, options)`: the replay API (`GET /history/{channel}`) as an async
 * iterator of pages, following each page's `next` cursor until the server says the end is
 * reached. The query is checked as the core's `HistoryQuery::validate` checks it
 * (crates/courier-core/src/history.rs), so a bad option fails before anything is sent, with
 * the parameter named in `field`; the server's refusals become the same `CourierError`
 * classes as everywhere else.
 */
import type { CourierEvent } from './base.js';
import { CourierError, ServerError, TransportError, ValidationError, errorClass, type ErrorCategory } from './errors.js';

/** The most events one page may hold (`limit`). */
export const MAX_HISTORY_LIMIT = 1000;

/** Options of `history()`: at most one of `after`, `before`, `since`, `cursor`. */
export interface HistoryOptions {
  /** Forwards from the oldest event the server holds with an offset greater than this. */
  after?: number;
  /** Backwards, newest first, from the event before this offset (at least 1). */
  before?: number;
  /** Forwards from the first event stored at or after this time (Unix ms, a `Date`, or RFC 3339). */
  since?: number | Date | string;
  /** Where a previous page ended: its `next`, as it came. */
  cursor?: string;
  /**
   * `forward` (the default, from the oldest held) or `backward` (from the newest) when no
   * start is given; with a start it must agree with it.
   */
  direction?: 'forward' | 'backward';
  /** Events per page, 1 to 1000 (default 100). */
  limit?: number;
  /** Aborts the request in flight and ends the iteration with the abort's reason. */
  signal?: AbortSignal;
}

/** One page of a channel's history. */
export interface HistoryPage<E extends { type: string } = CourierEvent> {
  /** The channel. */
  channel: string;
  /** The channel's current epoch; the offsets belong to it. */
  epoch: string;
  /** The channel's latest offset in `epoch` (0 when it never had an event). */
  latest: number;
  /** The events, each exactly as a live handler gets it (with `epoch` and `offset`), in the
   * page's direction: oldest first forwards, newest first backwards. */
  events: Array<E & { epoch: string; offset: number }>;
  /** The cursor of the next page in the same direction; `null` once the end is reached. */
  next: string | null;
}

// The codes the replay API answers, with the category the core gives each
// (tests/vectors/errors.json; test/history.test.mjs holds this table to it).
const CATEGORIES: Record<string, [ErrorCategory, boolean]> = {
  BAD_REQUEST: ['connection', false],
  UNAUTHORIZED: ['authentication', false],
  TOKEN_EXPIRED: ['authentication', false],
  FORBIDDEN_CHANNEL: ['authorization', false],
  EPOCH_CHANGED: ['validation', false],
  RATE_LIMIT_EXCEEDED: ['rate_limited', true],
  UNAVAILABLE: ['server', true],
  INTERNAL: ['server', true],
  SHUTTING_DOWN: ['server', true],
};
/** The categories `history()` gives the replay API's error codes (for the vector test). */
export const historyErrorCategories: Readonly<Record<string, readonly [ErrorCategory, boolean]>> = CATEGORIES;

const invalid = (field: string, message: string) =>
  new ValidationError('INVALID_ARGUMENT', `history: ${field} ${message}`, { field });

function offset(name: string, v: unknown, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw invalid(name, `must be a whole number ≥ ${min}`);
  return v;
}

/** The query string for `options` (checked first), e.g. `after=3&limit=100`. */
export function historyQuery(options: HistoryOptions): string {
  if (options === null || typeof options !== 'object') throw invalid('options', 'must be an object');
  const starts = (['after', 'before', 'since', 'cursor'] as const).filter((k) => options[k] !== undefined);
  if (starts.length > 1) throw invalid(starts[1]!, `cannot be combined with ${starts[0]}: give at most one of after, before, since, cursor`);
  const limit = options.limit === undefined ? 100 : options.limit;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT) {
    throw invalid('limit', `must be 1 to ${MAX_HISTORY_LIMIT}, not ${String(limit)}`);
  }
  const direction = options.direction;
  if (direction !== undefined && direction !== 'forward' && direction !== 'backward') {
    throw invalid('direction', `must be forward or backward, not ${String(direction)}`);
  }
  const backward = options.before !== undefined || (direction === 'backward' && starts.length === 0);
  if (direction !== undefined && starts.length > 0 && starts[0] !== 'cursor' && (direction === 'backward') !== backward) {
    throw invalid('direction', `is ${direction}, but ${starts[0]} pages ${backward ? 'backward' : 'forward'}`);
  }
  const q = new URLSearchParams();
  if (options.after !== undefined) q.set('after', String(offset('after', options.after, 0)));
  else if (options.before !== undefined) q.set('before', String(offset('before', options.before, 1)));
  else if (options.since !== undefined) {
    const s = options.since;
    const ms = s instanceof Date ? s.getTime() : typeof s === 'string' ? Date.parse(s) : s;
    if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0) {
      throw invalid('since', 'must be Unix milliseconds, a Date, or an RFC 3339 timestamp');
    }
    q.set('since', String(ms));
  } else if (options.cursor !== undefined) {
    if (typeof options.cursor !== 'string' || options.cursor === '') throw invalid('cursor', "must be a page's `next`, as it came");
    q.set('cursor', options.cursor);
  } else if (backward) q.set('direction', 'backward');
  q.set('limit', String(limit));
  return q.toString();
}

/** The `CourierError` for a refused request: the server's code, message and field. */
async function refusal(response: Response): Promise<CourierError> {
  let body: { error?: { code?: unknown; message?: unknown; field?: unknown; retry_after_ms?: unknown } } = {};
  try {
    body = (await response.json()) as typeof body;
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  const e = body?.error ?? {};
  const code = typeof e.code === 'string' ? e.code : response.status >= 500 ? 'INTERNAL' : 'UNKNOWN';
  const [category, retryable] = CATEGORIES[code] ?? ['unknown', false];
  const Class = errorClass(code, category);
  return new Class(code, typeof e.message === 'string' ? e.message : `HTTP ${response.status}`, {
    category,
    retryable,
    status: response.status,
    field: typeof e.field === 'string' ? e.field : undefined,
    retryAfterMs: typeof e.retry_after_ms === 'number' ? e.retry_after_ms : undefined,
  });
}

interface WireEntry {
  epoch: string;
  offset: number;
  event: Record<string, unknown>;
}

/**
 * The pages of `channel` from `base` (the server's HTTP base URL), with the token from
 * `token()` on each request.
 */
export async function* historyPages<E extends { type: string }>(
  base: string,
  token: () => Promise<string>,
  channel: string,
  options: HistoryOptions,
): AsyncGenerator<HistoryPage<E>, void, undefined> {
  if (typeof channel !== 'string' || channel === '') throw invalid('channel', 'must be a channel name');
  let query: string | undefined = historyQuery(options);
  const limit = new URLSearchParams(query).get('limit')!;
  while (query !== undefined) {
    const url = `${base}/history/${encodeURIComponent(channel)}?${query}`;
    let response: Response;
    try {
      response = await fetch(url, { headers: { authorization: `Bearer ${await token()}` }, signal: options.signal });
    } catch (e) {
      if (options.signal?.aborted) throw options.signal.reason;
      throw new TransportError('TRANSPORT', `history: ${e instanceof Error ? e.message : String(e)}`, { retryable: true });
    }
    if (!response.ok) throw await refusal(response);
    let page: { channel: string; epoch: string; latest: number; events: WireEntry[]; next: string | null };
    try {
      page = (await response.json()) as typeof page;
    } catch (e) {
      throw new ServerError('PROTOCOL_ERROR', `history: the answer is not JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (!page || !Array.isArray(page.events)) throw new ServerError('PROTOCOL_ERROR', 'history: the answer has no `events`');
    const events = page.events.map((entry) => Object.assign(entry.event, { epoch: entry.epoch, offset: entry.offset }) as unknown as E & { epoch: string; offset: number });
    yield { channel: page.channel, epoch: page.epoch, latest: page.latest, events, next: page.next ?? null };
    query = page.next ? new URLSearchParams({ cursor: page.next, limit }).toString() : undefined;
  }
}

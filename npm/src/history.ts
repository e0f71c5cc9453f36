/**
 * `client.history(channel, options)`: the replay API (`GET /history/{channel}`) as an async
 * iterator of pages. The core decides (the WASM's `HistoryPager`, crates/courier-wasm/src/
 * history.rs over courier_core::history): the checks of the query (one start, the limit's
 * range, a direction that agrees with the start), the URL of each request, the paging by
 * `next`, reading each answer into a page or a refusal with the core's category, and when to
 * ask again with a renewed token. This layer translates and moves bytes: the options' host
 * types in, each `GET` through `fetch` with the caller's `AbortSignal`, the core's errors out
 * as the same `CourierError` classes as everywhere else, and an abort as its reason.
 */
import type { CourierEvent } from './base.js';
import type { CoreHistoryPage, CoreHistoryQuery } from './wasm/courier_wasm.js';
import { ValidationError, errorFromThrown } from './errors.js';

/** The most events one page may hold (`limit`; the core's `MAX_PAGE_LIMIT`). */
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

/** The driver's pager class of an entry point's WASM (both builds have it). */
export type HistoryPagerClass = new (url: string, httpUrl: string | undefined, channel: string, query: CoreHistoryQuery) => {
  request(): string | undefined;
  handleAnswer(status: number, body: string): CoreHistoryPage | null;
  transportError(why: string): object;
  free(): void;
};

const invalid = (field: string, message: string) => new ValidationError('INVALID_ARGUMENT', `history: ${field} ${message}`, { field });

/** A JavaScript number as the core's whole number (`u64`, or `u32` below `max`). */
function whole(field: string, v: unknown, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) throw invalid(field, `must be a whole number from 0 to ${max}, not ${String(v)}`);
  return v;
}

/** The options with their host types translated for the core (which checks the rest). */
function coreQuery(options: HistoryOptions): CoreHistoryQuery {
  if (options === null || typeof options !== 'object') throw invalid('options', 'must be an object');
  const { since, direction, cursor } = options;
  let sinceMs: number | undefined;
  if (since !== undefined) {
    sinceMs = since instanceof Date ? since.getTime() : typeof since === 'string' ? Date.parse(since) : since;
    if (typeof sinceMs !== 'number' || !Number.isSafeInteger(sinceMs) || sinceMs < 0) {
      throw invalid('since', 'must be Unix milliseconds, a Date, or an RFC 3339 timestamp');
    }
  }
  if (direction !== undefined && direction !== 'forward' && direction !== 'backward') {
    throw invalid('direction', `must be forward or backward, not ${String(direction)}`);
  }
  if (cursor !== undefined && typeof cursor !== 'string') throw invalid('cursor', "must be a page's `next`, as it came");
  return {
    after: whole('after', options.after),
    before: whole('before', options.before),
    sinceMs,
    cursor,
    backward: direction === undefined ? undefined : direction === 'backward',
    limit: whole('limit', options.limit, 2 ** 32 - 1),
  };
}

/**
 * The pages of `channel` on the server at `url` (and `httpUrl`), with the token from `token()`
 * on each request, read by the entry point's `Pager`.
 */
export async function* historyPages<E extends { type: string }>(
  Pager: HistoryPagerClass,
  url: string,
  httpUrl: string | undefined,
  token: () => Promise<string>,
  channel: string,
  options: HistoryOptions,
  timeoutMs: number,
): AsyncGenerator<HistoryPage<E>, void, undefined> {
  const query = coreQuery(options);
  let pager: InstanceType<HistoryPagerClass>;
  try {
    pager = new Pager(url, httpUrl, channel, query);
  } catch (e) {
    throw errorFromThrown(e);
  }
  const signal = options.signal;
  try {
    for (let request = pager.request(); request !== undefined; request = pager.request()) {
      let page: CoreHistoryPage | null = null;
      while (page === null) {
        let bearer: string;
        try {
          bearer = await token();
        } catch (e) {
          throw errorFromThrown(pager.transportError(`the token provider failed: ${describe(e)}`));
        }
        let status: number;
        let body: string;
        // Each request (answer and body) within the client's `requestTimeoutMs`, as in
        // Rust and Python; the caller's signal aborts it too.
        if (signal?.aborted) throw signal.reason;
        const timeout = new AbortController();
        const timer = setTimeout(() => timeout.abort(), timeoutMs);
        const stop = () => timeout.abort();
        signal?.addEventListener('abort', stop, { once: true });
        try {
          const response = await fetch(request, { headers: { authorization: `Bearer ${bearer}` }, signal: timeout.signal });
          status = response.status;
          body = await response.text();
        } catch (e) {
          if (signal?.aborted) throw signal.reason;
          const why = timeout.signal.aborted ? `no answer within ${timeoutMs} ms (requestTimeoutMs)` : describe(e);
          throw errorFromThrown(pager.transportError(`GET ${request}: ${why}`));
        } finally {
          clearTimeout(timer);
          signal?.removeEventListener('abort', stop);
        }
        try {
          // `null`: ask once more with a renewed token.
          page = pager.handleAnswer(status, body);
        } catch (e) {
          throw errorFromThrown(e);
        }
      }
      yield page as HistoryPage<E>;
    }
  } finally {
    // At the end, on an error, or when the caller stops early (`break`): the WASM memory
    // now rather than at garbage collection.
    pager.free();
  }
}

/** What a thrown value says, with its `cause` (Node's `fetch failed` names the socket error there). */
function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  return e.cause === undefined ? e.message : `${e.message} (${describe(e.cause)})`;
}

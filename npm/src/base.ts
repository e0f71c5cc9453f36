/**
 * What both entry points share: the public types, and `BaseClient`, the facade over the WASM
 * driver (`crates/courier-wasm/src/driver.rs`) without publishing.
 *
 * The core's one client, compiled to WASM, decides everything that has a policy and the
 * driver does its I/O (the WebSocket, `fetch`, the one timer). This layer is the host idiom
 * only: options checked and typed, handlers by listener id, `EventEmitter`-style `on`/`off`,
 * promises, and core errors turned into `CourierError` classes. No reconnect, timer or socket
 * code lives here.
 */
import type { CourierEventDataMap, Metadata } from './events.generated.js';
// The checked options and the callbacks the driver takes are declared once, in the driver
// (`CoreOptions`, `CoreHost` in crates/courier-wasm/src/driver.rs).
import type { CoreHost, CoreOptions } from './wasm/courier_wasm.js';
import { ConnectionClosedError, CourierError, UsageError, errorFromCore, errorFromThrown, type CoreErrorJson } from './errors.js';
import { historyPages, type HistoryOptions, type HistoryPage, type HistoryPagerClass } from './history.js';

/** Every event type of the catalogue. */
export type KnownEventType = keyof CourierEventDataMap;

/** An event as delivered: the envelope plus its place in the channel's history. */
export interface EventEnvelope<T extends string = string, D = unknown> {
  /** The event id (idempotency key). */
  id: string;
  /** The event type, e.g. `backtest.progress`. */
  type: T;
  /** The channel it was published to. */
  channel: string;
  /** The payload; its shape depends on `type`. */
  data: D;
  /** Who sent it, when, why. */
  metadata: Metadata;
  /** The channel history's epoch. */
  epoch: string;
  /** The event's offset in the channel (grows by one per event). */
  offset: number;
}

/** Any catalogue event, discriminated by `type`: `if (e.type === 'backtest.progress') e.data.percent`. */
export type CourierEvent = { [K in KnownEventType]: EventEnvelope<K, CourierEventDataMap[K]> }[KnownEventType];

/** An event of a custom type: `client.subscribe<CustomEvent<'my.thing', MyData>>(…)`. */
export type CustomEvent<T extends string = string, D = unknown> = EventEnvelope<T, D>;

/** `disconnected` (a reconnect may be scheduled), `connecting`, `connected` or `closed`. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'closed';

/** A position in a channel's history. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/**
 * Events on `channel` the server no longer holds, reported once; delivery goes on with the
 * event after `position`. Missing: within one epoch, offsets `last.offset + 1 ..= position.offset`;
 * after an epoch change, the old epoch's events after `last` and the new epoch's offsets
 * `1 ..= position.offset` (none when `position.offset` is 0).
 */
export interface Gap {
  channel: string;
  /** The last position delivered before the gap. */
  last: StreamPosition | null;
  /** The last missing position: delivery continues right after it. */
  position: StreamPosition;
  /** `epoch_changed` (the server lost its history, e.g. a restart), `history_unavailable`, `offset_skipped`. */
  reason: 'epoch_changed' | 'history_unavailable' | 'offset_skipped';
}

/** The acknowledgement of a published event. */
export interface PublishResult {
  id: string;
  channel: string;
  epoch: string;
  offset: number;
  /** The server had already accepted this id (a retry whose first answer was lost). */
  duplicate: boolean;
  /** How many times it was sent. */
  attempts: number;
}

/** An event the publish queue gave up on. */
export interface DeadLetter {
  id: string;
  type: string;
  channel: string;
  error: CourierError;
  attempts: number;
}

/**
 * Every counter and gauge of `stats()`: the core's `ClientStats`, with the same names in every
 * Courier SDK (hence snake_case).
 */
export interface ClientStats {
  /** High-priority events waiting to be sent (first attempts and retries). */
  queued_high: number;
  /** Normal-priority events waiting to be sent. */
  queued_normal: number;
  /** Low-priority events waiting to be sent. */
  queued_low: number;
  /** Events in requests awaiting an answer. */
  in_flight: number;
  /** Queued events that failed before and wait to be sent again. */
  retrying: number;
  /** Events sent again after a retryable failure, in all. */
  retries: number;
  /** Events given up (dead letters), in all. */
  dead: number;
  /** Events acknowledged by the server (accepted or duplicate), in all. */
  acknowledged: number;
  /** Times retries waited for the retry budget. */
  budget_exhausted: number;
  /** Times a server-announced limit (Retry-After, a learned quota) held something back. */
  rate_limit_waits: number;
  /** Connections established after the first one. */
  reconnects: number;
  /** Events received on the WebSocket (once per event, however many handlers it has). */
  events_received: number;
  /** Replayed events dropped because they were already delivered. */
  duplicates_dropped: number;
  /** Gaps reported. */
  gaps: number;
  /** Heartbeat timeouts that replaced a connection. */
  heartbeat_timeouts: number;
  /** Channels subscribed. */
  channels: number;
  /** Channels paused because a listener fell behind (always 0 here: handlers run at once). */
  paused_channels: number;
  /** Times a channel was paused, in all. */
  pauses: number;
  /** Token provider calls, in all. */
  token_fetches: number;
  /**
   * Bytes read from the WebSocket's TCP socket: the upgrade response, frame headers, payloads
   * as they crossed the wire (compressed when permessage-deflate was negotiated; for `wss`
   * what Node's `TLSSocket` counts, the bytes inside TLS), summed over every connection of
   * the client, reconnects included. Counted in Node with the `ws` package (its default
   * there); `null` where the platform exposes no such count: browsers, and Node's built-in
   * `WebSocket`.
   */
  wire_bytes_received: number | null;
  /** Bytes written to the WebSocket's TCP socket, counted like `wire_bytes_received`. */
  wire_bytes_sent: number | null;
}

/**
 * Counts the bytes on the wire of one client's sockets: `wrap` gives the constructor the
 * driver uses, `count` the sums so far. Only the Node entry points install one
 * (`setWireCounter`), so browser bundles carry none of it.
 */
export interface WireCounter {
  wrap(ctor: WebSocketConstructor): WebSocketConstructor;
  count(k: 'bytesRead' | 'bytesWritten'): number;
}

/** Makes a client's counter for its constructor, or `undefined` when it exposes no bytes. */
let wireCounter: ((ctor: WebSocketConstructor) => WireCounter | undefined) | undefined;

/** Installs what counts the sockets' bytes (the Node entry points, for the `ws` package). */
export function setWireCounter(f: (ctor: WebSocketConstructor) => WireCounter | undefined): void {
  wireCounter = f;
}

/** A `WebSocket` constructor: the global one, or `WebSocket` from the `ws` package in Node. */
export type WebSocketConstructor = abstract new (url: string) => object;

/** A token, or a function that returns one (asked again whenever the token expires). */
export type TokenProvider = string | (() => string | Promise<string>);

/** Options of `new CourierClient(…)`. */
export interface CourierClientOptions {
  /**
   * The server: `http(s)://host[:port][/prefix]` or `ws(s)://host[:port][/prefix][/ws]`; the
   * core derives the WebSocket URL (`…/ws`) and the HTTP base from either.
   */
  url: string;
  /**
   * The JWT, or a function returning one: one call at a time, shared by the WebSocket and
   * publishing, and again when the server says it expired.
   */
  token: TokenProvider;
  /** `metadata.source` of the events this client publishes (unless an event names its own). */
  serviceName?: string;
  /** Reconnect delays (full jitter between them, decided by the core). */
  reconnect?: { minDelayMs?: number; baseDelayMs?: number; maxDelayMs?: number };
  /** The WebSocket constructor; defaults to `globalThis.WebSocket` (or `ws` in Node when installed). */
  WebSocket?: WebSocketConstructor;
  /** Base URL for HTTP publishing (any form `url` accepts); derived from `url` by default. */
  httpUrl?: string;
  /** Publish queue settings (ignored by the subscriber entry point). */
  publish?: { maxQueued?: number; maxBatchEvents?: number; lingerMs?: number; maxAttempts?: number; maxInFlight?: number };
  /** Timeout of one HTTP request, a publish batch or a `history()` page (default 30 s). */
  requestTimeoutMs?: number;
  /** Sent to the server in `connect`, for its logs. */
  clientName?: string;
}

/** Options of `subscribe`. */
export interface SubscribeOptions {
  /**
   * Resume after this position: the server replays what came after it. A channel this client
   * already subscribes to cannot replay for one handler: a `since` other than its current
   * position throws a `UsageError` (`ALREADY_SUBSCRIBED`).
   */
  since?: StreamPosition;
}

/** Options of `publish`. */
export interface PublishOptions {
  /** `high` is sent before `normal` before `low`. */
  priority?: 'high' | 'normal' | 'low';
  /** The event id; the server delivers one id once. Generated (time-sortable) when absent. */
  idempotencyKey?: string;
  /** `false` for events that must never be sent twice: any failure is final. Default `true`. */
  retry?: boolean;
  /** `correlation_id`, `user_id`, `source` (default `serviceName`), `timestamp` (default now). */
  metadata?: Partial<Metadata>;
}

/** A live subscription; `unsubscribe()` removes this handler only. */
export interface Subscription {
  readonly channel: string;
  /**
   * Resolves once the server confirmed the subscription (events published after that reach
   * the handler), with the channel's latest position at that moment; rejects with the `CourierError` that refused it, or a
   * `ConnectionClosedError` when the client closes first or `unsubscribe()` came first.
   * Not awaiting it is fine: a rejection nobody awaits is not reported as unhandled.
   */
  readonly ready: Promise<StreamPosition>;
  /** Removes this handler (the server subscription ends with the channel's last one). */
  unsubscribe(): void;
}

/** Listener signatures of `on` / `off`. */
export interface CourierClientEvents {
  state: (state: ConnectionState) => void;
  error: (error: CourierError) => void;
  gap: (gap: Gap) => void;
}

type Handler = (event: EventEnvelope) => void;

/** The driver as the facade uses it: both builds of the WASM have these. */
export interface CoreLike {
  state(): ConnectionState;
  connect(): void;
  close(): void;
  subscribe(channel: string, sinceEpoch: string | undefined, sinceOffset: number | undefined): number;
  unsubscribe(listener: number): boolean;
  position(channel: string): StreamPosition | undefined;
  stats(): Record<string, number>;
}

/** Makes the driver of an entry point's WASM. */
export type CoreFactory = (options: CoreOptions, host: CoreHost, seedHi: number, seedLo: number) => CoreLike;

let defaultWebSocket: WebSocketConstructor | undefined;

/** Sets the WebSocket constructor used when none is passed (the Node entry uses `ws` when installed). */
export function setDefaultWebSocket(ctor: WebSocketConstructor | undefined): void {
  defaultWebSocket = ctor;
}

/** A non-negative integer option, or `undefined`; anything else is a `UsageError`. */
export function count(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new UsageError('INVALID_ARGUMENT', `${name} must be a non-negative integer, not ${String(v)}`);
  }
  return v;
}

/** An optional string option; anything else is a `UsageError`. */
export function text(name: string, v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new UsageError('INVALID_ARGUMENT', `${name} must be a string`);
  return v;
}

function seed(): number {
  const c = (globalThis as { crypto?: { getRandomValues?(a: Uint32Array): Uint32Array } }).crypto;
  return c?.getRandomValues ? c.getRandomValues(new Uint32Array(1))[0]! : Math.floor(Math.random() * 2 ** 32);
}

/** The user's token provider as the promise of a string the driver awaits. */
function tokenSource(provider: TokenProvider): () => Promise<string> {
  if (typeof provider !== 'string' && typeof provider !== 'function') {
    throw new UsageError('INVALID_ARGUMENT', 'token must be a string or a function returning one');
  }
  return () =>
    Promise.resolve()
      .then(() => (typeof provider === 'string' ? provider : provider()))
      .then((token: unknown) => {
        if (typeof token !== 'string') throw new Error(`the token provider returned ${typeof token}, not a string`);
        return token;
      });
}

interface Listener {
  channel: string;
  handler: Handler;
  /** Settles `ready` (undefined once settled). */
  ready?: { resolve: (p: StreamPosition) => void; reject: (e: CourierError) => void };
}

/**
 * The client without publishing: what `courier-client/subscriber` exports as `CourierClient`,
 * and the base of the full `CourierClient`. React hooks take either.
 */
export class BaseClient {
  /** The WASM driver. */
  protected readonly core: CoreLike;
  /** The handler of each core listener (one per `subscribe` call), by listener id. */
  readonly #listenersById = new Map<number, Listener>();
  /** The hot path's event, kept by `readEvent` for `deliverEvent`, and the last channel/epoch. */
  #event: EventEnvelope | undefined;
  #lastChannel = '';
  #lastEpoch = '';
  /** `subscribed` answers that came during `subscribe()`, before its listener was registered. */
  readonly #early = new Map<number, StreamPosition>();
  readonly #listeners: { [K in keyof CourierClientEvents]: Set<CourierClientEvents[K]> } = {
    state: new Set(),
    error: new Set(),
    gap: new Set(),
  };

  /** The token provider, also used by `history()`. */
  readonly #token: () => Promise<string>;
  /** `history()`'s reader (the entry's WASM) and the URLs it derives the HTTP base from. */
  readonly #history: { Pager: HistoryPagerClass; url: string; httpUrl: string | undefined };
  /** `history()`'s per-request timeout (`requestTimeoutMs`, 30 s by default as for publish). */
  readonly #requestTimeoutMs: number;
  /** The sockets' byte counts, where the platform exposes them (Node with `ws`). */
  readonly #wire: WireCounter | undefined;

  /**
   * Checks the options and makes the driver with `factory` (each entry point its own WASM);
   * `Pager` is that WASM's `HistoryPager`, for `history()`.
   */
  protected constructor(options: CourierClientOptions, factory: CoreFactory, Pager: HistoryPagerClass) {
    if (options === null || typeof options !== 'object') throw new UsageError('INVALID_ARGUMENT', 'options must be an object');
    const ctor = options.WebSocket ?? defaultWebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (typeof ctor !== 'function') {
      throw new UsageError(
        'NO_WEBSOCKET',
        'no WebSocket constructor: pass `WebSocket` (e.g. from the `ws` package) or run Node 22+',
      );
    }
    const url = text('url', options.url);
    if (url === undefined) throw new UsageError('INVALID_ARGUMENT', 'url is required');
    const wire = wireCounter?.(ctor);
    this.#wire = wire;
    const r = options.reconnect ?? {};
    const p = options.publish ?? {};
    const core: CoreOptions = {
      url,
      httpUrl: text('httpUrl', options.httpUrl),
      serviceName: text('serviceName', options.serviceName),
      clientName: text('clientName', options.clientName) ?? 'courier-ts/0.1.0',
      WebSocket: wire ? wire.wrap(ctor) : ctor,
      minDelayMs: count('reconnect.minDelayMs', r.minDelayMs),
      baseDelayMs: count('reconnect.baseDelayMs', r.baseDelayMs),
      maxDelayMs: count('reconnect.maxDelayMs', r.maxDelayMs),
      maxQueued: count('publish.maxQueued', p.maxQueued),
      maxBatchEvents: count('publish.maxBatchEvents', p.maxBatchEvents),
      lingerMs: count('publish.lingerMs', p.lingerMs),
      maxAttempts: count('publish.maxAttempts', p.maxAttempts),
      maxInFlight: count('publish.maxInFlight', p.maxInFlight),
      requestTimeoutMs: count('requestTimeoutMs', options.requestTimeoutMs),
    };
    const token = tokenSource(options.token);
    this.#token = token;
    this.#history = { Pager, url, httpUrl: core.httpUrl };
    this.#requestTimeoutMs = core.requestTimeoutMs ?? 30_000;
    const host: CoreHost = {
      onEvent: (listener, event) => this.#deliver(listener, event as EventEnvelope),
      readEvent: (data, maxLength) => this.#readEvent(data, maxLength),
      eventChannel: () => this.#lastChannel,
      eventEpoch: () => this.#lastEpoch,
      deliverEvent: (listener) => {
        if (this.#event) this.#deliver(listener, this.#event);
      },
      onState: (state) => {
        if (state === 'closed') this.#settleAll();
        this.#emit('state', state);
      },
      onGap: (gap) => this.#emit('gap', gap as Gap),
      onSubscribed: (listener, position) => {
        // A channel already live answers a new listener during `subscribe()` itself, before
        // the listener is registered below: keep the answer for it.
        if (!this.#listenersById.has(listener)) this.#early.set(listener, position as StreamPosition);
        else this.#settle(listener, undefined, position as StreamPosition);
      },
      onSubscriptionFailed: (listener, error) => this.#onSubscriptionFailed(listener, error as CoreErrorJson),
      onError: (error) => this.#emit('error', errorFromCore(error as CoreErrorJson)),
      onPublished: (ticket, ok, error) => this.onPublished(ticket, ok, error),
      onFlushed: () => this.onFlushed(),
      token,
    };
    try {
      this.core = factory(core, host, seed(), seed());
    } catch (e) {
      throw errorFromThrown(e);
    }
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.core.state();
  }

  /**
   * Connects early: the first `subscribe` connects anyway and publishing needs no WebSocket.
   * From here on the client reconnects by itself until `close()`; calling it again is harmless.
   */
  connect(): void {
    this.core.connect();
  }

  /**
   * Closes for good: the socket at once; events already queued for publishing still go out
   * (`await flush()`). Once they are out nothing stays armed (no socket, timer or request),
   * so a Node process exits by itself.
   */
  close(): void {
    this.core.close();
    this.#settleAll();
  }

  /** Listens to `state` changes, `error`s and `gap`s. */
  on<K extends keyof CourierClientEvents>(event: K, listener: CourierClientEvents[K]): this {
    (this.#listeners[event] as Set<CourierClientEvents[K]>).add(listener);
    return this;
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof CourierClientEvents>(event: K, listener: CourierClientEvents[K]): this {
    (this.#listeners[event] as Set<CourierClientEvents[K]>).delete(listener);
    return this;
  }

  /**
   * Calls `handler` for every event on `channel`, in order, never twice, across reconnects;
   * connects if needed. Each call adds a handler (subscribing twice gives two, from the
   * channel's current position on; both get the same event object); `unsubscribe()` removes
   * its own. `ready` resolves once the server confirmed the subscription. Events are typed by
   * the catalogue; pass a type argument for custom events. Throws a `CourierError` at once for
   * an invalid channel, a closed client, or a `since` other than the position of a channel
   * already subscribed (`UsageError`, `ALREADY_SUBSCRIBED`).
   */
  subscribe<E extends { type: string } = CourierEvent>(
    channel: string,
    handler: (event: E) => void,
    options: SubscribeOptions = {},
  ): Subscription {
    if (typeof handler !== 'function') throw new UsageError('INVALID_ARGUMENT', 'handler must be a function');
    const since = options.since;
    if (since !== undefined && (since === null || typeof since.epoch !== 'string')) {
      throw new UsageError('INVALID_ARGUMENT', 'since must be { epoch: string, offset: number }');
    }
    const entry: Listener = { channel, handler: handler as unknown as Handler };
    const ready = new Promise<StreamPosition>((resolve, reject) => {
      entry.ready = { resolve, reject };
    });
    // An unobserved rejection is not an error of the application's: mark it handled.
    ready.catch(() => {});
    let listener: number;
    try {
      listener = this.core.subscribe(channel, since?.epoch, since ? (count('since.offset', since.offset) ?? 0) : undefined);
    } catch (e) {
      throw errorFromThrown(e);
    }
    this.#listenersById.set(listener, entry);
    const early = this.#early.get(listener);
    if (early) {
      this.#early.delete(listener);
      this.#settle(listener, undefined, early);
    }
    return {
      channel,
      ready,
      unsubscribe: () => {
        if (!this.#listenersById.has(listener)) return;
        this.#settle(listener, new ConnectionClosedError('CLOSED', `unsubscribed from ${channel} before it was ready`));
        this.#listenersById.delete(listener);
        this.core.unsubscribe(listener);
      },
    };
  }

  /**
   * The channel's stored history through the replay API (`GET /history/{channel}`), page by
   * page: `for await (const page of client.history('backtest.b1', { limit: 50 }))`. Forwards
   * from the oldest held by default; `after`, `before` (backwards, newest first), `since` or a
   * previous page's `cursor` start elsewhere, and `direction: 'backward'` alone starts from
   * the newest. Events are typed like live ones (pass a type argument for custom events).
   * Needs no WebSocket. A bad option throws a `ValidationError` naming it before anything is
   * sent; the server's refusals are `CourierError`s (`ForbiddenChannelError`,
   * `AuthenticationError`, `ValidationError` with `EPOCH_CHANGED` for a cursor of an older
   * epoch, ...).
   */
  history<E extends { type: string } = CourierEvent>(channel: string, options: HistoryOptions = {}): AsyncGenerator<HistoryPage<E>, void, undefined> {
    const { Pager, url, httpUrl } = this.#history;
    return historyPages<E>(Pager, url, httpUrl, this.#token, channel, options, this.#requestTimeoutMs);
  }

  /** Handlers registered on `channel` (for tests and devtools). */
  listenerCount(channel: string): number {
    let n = 0;
    for (const h of this.#listenersById.values()) if (h.channel === channel) n += 1;
    return n;
  }

  /** The last position delivered on `channel`, to resume from later with `since`. */
  position(channel: string): StreamPosition | undefined {
    return this.core.position(channel);
  }

  /**
   * Every counter of the core's `ClientStats`, by name (the same names in every SDK); the
   * `wire_bytes_*` ones come from the sockets, `null` where they cannot be counted.
   */
  stats(): ClientStats {
    const s = this.core.stats() as unknown as ClientStats;
    const w = this.#wire;
    s.wire_bytes_received = w ? w.count('bytesRead') : null;
    s.wire_bytes_sent = w ? w.count('bytesWritten') : null;
    return s;
  }

  /** A publish completed (the full client resolves its promise). */
  protected onPublished(_ticket: number, _ok: object | undefined, _error: object | undefined): void {}

  /** Everything published is acknowledged or dead (the full client resolves `flush()`). */
  protected onFlushed(): void {}

  /** Reports an error to `on('error')` listeners. */
  protected emitError(e: CourierError): void {
    this.#emit('error', e);
  }

  /**
   * The per-event path (`readEvent` in the driver's `CoreHost`): one `JSON.parse`, the
   * shape checks the core's decision needs, and the position back as one number. Anything
   * else is -1, and the driver hands the frame to the core, which decodes and reports it.
   */
  #readEvent(data: unknown, maxLength: number): number {
    if (typeof data !== 'string' || data.length > maxLength) return -1;
    let f: { op?: unknown; epoch?: unknown; offset?: unknown; event?: { channel?: unknown } | null };
    try {
      f = JSON.parse(data) as typeof f;
    } catch {
      return -1;
    }
    if (f === null || typeof f !== 'object' || f.op !== 'event') return -1;
    const { epoch, offset, event } = f;
    if (event === null || typeof event !== 'object' || typeof event.channel !== 'string' || typeof epoch !== 'string') return -1;
    if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0 || offset > 2 ** 51) return -1;
    let changed = 0;
    if (event.channel !== this.#lastChannel) {
      this.#lastChannel = event.channel;
      changed |= 1;
    }
    if (epoch !== this.#lastEpoch) {
      this.#lastEpoch = epoch;
      changed |= 2;
    }
    const e = event as unknown as EventEnvelope;
    e.epoch = epoch;
    e.offset = offset;
    this.#event = e;
    return offset * 4 + changed;
  }

  #deliver(listener: number, event: EventEnvelope): void {
    const entry = this.#listenersById.get(listener);
    if (!entry) return;
    try {
      entry.handler(event);
    } catch (e) {
      this.#report(e);
    }
  }

  /** Resolves (with `position`) or, with `error`, rejects a listener's `ready`, once. */
  #settle(listener: number, error?: CourierError, position?: StreamPosition): void {
    const entry = this.#listenersById.get(listener);
    const ready = entry?.ready;
    if (!ready) return;
    entry.ready = undefined;
    if (error || !position) ready.reject(error ?? new CourierError('UNKNOWN', 'no position'));
    else ready.resolve(position);
  }

  /** The client closed: every `ready` still pending rejects. */
  #settleAll(): void {
    for (const [listener, entry] of this.#listenersById) {
      if (entry.ready) this.#settle(listener, new ConnectionClosedError('CLOSED', `the client closed before ${entry.channel} was ready`));
    }
  }

  #report(e: unknown): void {
    if (this.#listeners.error.size === 0) {
      // Like an exception in any event listener: surface it without breaking delivery.
      queueMicrotask(() => {
        throw e;
      });
      return;
    }
    const err = e instanceof CourierError ? e : new CourierError('HANDLER_ERROR', e instanceof Error ? e.message : String(e));
    this.#emit('error', err);
  }

  #emit<K extends keyof CourierClientEvents>(event: K, ...args: Parameters<CourierClientEvents[K]>): void {
    for (const l of this.#listeners[event]) {
      try {
        (l as (...a: Parameters<CourierClientEvents[K]>) => void)(...args);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  #onSubscriptionFailed(listener: number, json: CoreErrorJson): void {
    const entry = this.#listenersById.get(listener);
    const err = errorFromCore(json);
    if (entry) err.message = `subscription to ${entry.channel} failed: ${err.message}`;
    this.#settle(listener, err);
    this.#listenersById.delete(listener);
    this.#emit('error', err);
  }
}

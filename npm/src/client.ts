/**
 * `CourierClient`: the public API, written in TypeScript over the WASM driver.
 *
 * The core's one client (`courier_core::client::Client`, compiled to WASM) decides everything
 * that has a policy: the endpoints derived from `url`, connecting on the first subscription,
 * reconnect and backoff, resume and gaps, heartbeats, the one token (one provider call at a
 * time, shared by the WebSocket and HTTP), event stamping (id, timestamp, `source` from
 * `serviceName`), several listeners per channel, batching, Retry-After, client-side rate
 * limiting, the retry budget and dead letters. This file moves bytes and time for it (the
 * WebSocket, `fetch`, one timer) and translates: options in, callbacks out, JSON to typed
 * objects, core errors to `CourierError`s, and listener ids to handlers. The driver's
 * outputs are documented in `crates/courier-wasm/src/driver.rs`.
 */
import { Driver, Endpoints, OutputKind } from './wasm/courier_wasm.js';
import type { CourierEventDataMap, Metadata } from './events.generated.js';
import { CourierError, UsageError, errorFromCore, errorFromThrown, type CoreErrorJson } from './errors.js';

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
  /** Publish queue settings. */
  publish?: { maxQueued?: number; maxBatchEvents?: number; lingerMs?: number; maxAttempts?: number; maxInFlight?: number };
  /** Timeout of one HTTP publish request (default 30 s). */
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
  unsubscribe(): void;
}

/** Listener signatures of `on` / `off`. */
export interface CourierClientEvents {
  state: (state: ConnectionState) => void;
  error: (error: CourierError) => void;
  gap: (gap: Gap) => void;
}

type Handler = (event: EventEnvelope) => void;
type Deferred = { resolve: (r: PublishResult) => void; reject: (e: CourierError) => void };

let defaultWebSocket: WebSocketConstructor | undefined;
/** The WASM instance's memory (set by the entry point), for writing frames in directly. */
let wasmMemory: WebAssembly.Memory | undefined;
let wasmBytes = new Uint8Array(0);
const encoder = new TextEncoder();

/** Called once by the entry point after instantiating the WASM. */
export function setWasmMemory(memory: WebAssembly.Memory): void {
  wasmMemory = memory;
}

/** Sets the WebSocket constructor used when none is passed (the Node entry uses `ws` when installed). */
export function setDefaultWebSocket(ctor: WebSocketConstructor | undefined): void {
  defaultWebSocket = ctor;
}

/** The core's endpoints for `url` (and `httpUrl`), or a `CourierError` for a URL it refuses. */
function coreEndpoints(url: unknown, httpUrl: unknown): Endpoints {
  const u = text('url', url);
  if (u === undefined) throw new UsageError('INVALID_ARGUMENT', 'url is required');
  try {
    return new Endpoints(u, text('httpUrl', httpUrl));
  } catch (e) {
    throw errorFromThrown(e);
  }
}

/**
 * The WebSocket URL and the `POST /publish/batch` URL the client uses for these options, as
 * the core derives them (`http(s)://` and `ws(s)://` both work; a trailing `/ws` names the
 * WebSocket endpoint). Throws a `ValidationError` for a URL the core refuses.
 */
export function endpoints(url: string, httpUrl?: string): { wsUrl: string; publishUrl: string } {
  const e = coreEndpoints(url, httpUrl);
  try {
    return { wsUrl: e.wsUrl, publishUrl: e.publishUrl };
  } finally {
    e.free();
  }
}

/** An event frame, or an `Event` output of the driver (the same shape). */
interface DeliveryJson {
  epoch: string;
  offset: number;
  event: EventEnvelope;
}

/** A non-negative integer option, or `undefined`; anything else is a `UsageError`. */
function count(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new UsageError('INVALID_ARGUMENT', `${name} must be a non-negative integer, not ${String(v)}`);
  }
  return v;
}

/** An optional string option; anything else is a `UsageError`. */
function text(name: string, v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new UsageError('INVALID_ARGUMENT', `${name} must be a string`);
  return v;
}

/** What a failed `fetch` or WebSocket constructor said, with its cause. */
function describe(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    return cause === undefined ? e.message : `${e.message} (${describe(cause)})`;
  }
  return String(e);
}

/** Response headers the core reads (Retry-After and the rate-limit fields). */
const LIMIT_HEADERS = ['retry-after', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'ratelimit', 'ratelimit-policy'];

/** The part of a WebSocket the client uses (the host's, or the `ws` package's). */
interface Socket {
  onopen: ((e: unknown) => void) | null;
  onmessage: ((e: { data: unknown }) => void) | null;
  onclose: ((e: { code: number; reason: string }) => void) | null;
  onerror: ((e: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

function seed(): number {
  const c = (globalThis as { crypto?: { getRandomValues?(a: Uint32Array): Uint32Array } }).crypto;
  return c?.getRandomValues ? c.getRandomValues(new Uint32Array(1))[0]! : Math.floor(Math.random() * 2 ** 32);
}

/** The Courier client: subscribe to channels, publish events, never write reconnect code. */
export class CourierClient {
  readonly #driver: Driver;
  readonly #token: TokenProvider;
  readonly #ctor: WebSocketConstructor;
  readonly #wsUrl: string;
  readonly #publishUrl: string;
  readonly #timeoutMs: number;
  /** The handler of each core listener (one per `subscribe` call), by listener id. */
  readonly #handlers = new Map<number, { channel: string; handler: Handler }>();
  readonly #pending = new Map<number, Deferred>();
  readonly #listeners: { [K in keyof CourierClientEvents]: Set<CourierClientEvents[K]> } = {
    state: new Set(),
    error: new Set(),
    gap: new Set(),
  };
  #socket: Socket | undefined;
  /** The driver's inbox in WASM memory, as a view; replaced when it must grow or the memory grew. */
  #inbox = new Uint8Array(0);
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #flushWaiters: Array<() => void> = [];

  constructor(options: CourierClientOptions) {
    const ctor = options.WebSocket ?? defaultWebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!ctor) {
      throw new UsageError(
        'NO_WEBSOCKET',
        'no WebSocket constructor: pass `WebSocket` (e.g. from the `ws` package) or run Node 22+',
      );
    }
    this.#token = options.token;
    this.#ctor = ctor;
    const r = options.reconnect ?? {};
    const p = options.publish ?? {};
    this.#timeoutMs = count('requestTimeoutMs', options.requestTimeoutMs) ?? 30_000;
    const ep = coreEndpoints(options.url, options.httpUrl);
    this.#wsUrl = ep.wsUrl;
    this.#publishUrl = ep.publishUrl;
    ep.free();
    this.#driver = new Driver(
      text('serviceName', options.serviceName),
      text('clientName', options.clientName) ?? 'courier-ts/0.1.0',
      seed(),
      seed(),
      count('reconnect.minDelayMs', r.minDelayMs),
      count('reconnect.baseDelayMs', r.baseDelayMs),
      count('reconnect.maxDelayMs', r.maxDelayMs),
      count('publish.maxQueued', p.maxQueued),
      count('publish.maxBatchEvents', p.maxBatchEvents),
      count('publish.lingerMs', p.lingerMs),
      count('publish.maxAttempts', p.maxAttempts),
      count('publish.maxInFlight', p.maxInFlight),
    );
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.#driver.state();
  }

  /**
   * Connects early: the first `subscribe` connects anyway and publishing needs no WebSocket.
   * From here on the client reconnects by itself until `close()`; calling it again is harmless.
   */
  connect(): void {
    this.#driver.connect();
    this.#pump();
  }

  /**
   * Closes for good: the socket at once; events already queued for publishing still go out
   * (`await flush()`).
   */
  close(): void {
    this.#driver.close();
    this.#pump();
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
   * channel's current position on); `unsubscribe()` removes its own. Events are typed by the
   * catalogue; pass a type argument for custom events. Throws a `CourierError` at once for an
   * invalid channel, a closed client, or a `since` other than the position of a channel
   * already subscribed (`UsageError`, `ALREADY_SUBSCRIBED`).
   */
  subscribe<E extends { type: string } = CourierEvent>(
    channel: string,
    handler: (event: E) => void,
    options: SubscribeOptions = {},
  ): Subscription {
    const since = options.since;
    if (since !== undefined && (since === null || typeof since.epoch !== 'string')) {
      throw new UsageError('INVALID_ARGUMENT', 'since must be { epoch: string, offset: number }');
    }
    let listener: number;
    try {
      listener = this.#driver.subscribe(channel, since?.epoch, since ? count('since.offset', since.offset) ?? 0 : undefined);
    } catch (e) {
      throw errorFromThrown(e);
    }
    this.#handlers.set(listener, { channel, handler: handler as unknown as Handler });
    this.#pump();
    return {
      channel,
      unsubscribe: () => {
        if (!this.#handlers.delete(listener)) return;
        this.#driver.unsubscribe(listener);
        this.#pump();
      },
    };
  }

  /** Handlers registered on `channel` (for tests and devtools). */
  listenerCount(channel: string): number {
    let n = 0;
    for (const h of this.#handlers.values()) if (h.channel === channel) n += 1;
    return n;
  }

  /** The last position delivered on `channel`, to resume from later with `since`. */
  position(channel: string): StreamPosition | undefined {
    const json = this.#driver.position(channel);
    return json === undefined ? undefined : (JSON.parse(json) as StreamPosition);
  }

  /**
   * Publishes over HTTP through the core's queue (batching, idempotent retries, Retry-After,
   * client-side rate limiting); the core stamps the id, `metadata.timestamp` and
   * `metadata.source` (`serviceName`) unless given. Resolves when the server acknowledged the event; rejects with
   * a `CourierError` when it was refused or given up (it is then a dead letter too).
   */
  publish<K extends KnownEventType>(channel: string, type: K, data: CourierEventDataMap[K], options?: PublishOptions): Promise<PublishResult>;
  publish<T extends string>(channel: string, type: T extends KnownEventType ? never : T, data: unknown, options?: PublishOptions): Promise<PublishResult>;
  publish(channel: string, type: string, data: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    let ticket: number;
    try {
      const json = JSON.stringify(data);
      if (json === undefined) throw new UsageError('INVALID_ARGUMENT', 'data must be JSON-serialisable');
      const m = options.metadata ?? {};
      ticket = this.#driver.publish(
        channel,
        type,
        json,
        text('priority', options.priority),
        text('idempotencyKey', options.idempotencyKey),
        options.retry ?? true,
        Date.now(),
        text('metadata.source', m.source),
        text('metadata.correlation_id', m.correlation_id),
        text('metadata.user_id', m.user_id),
        count('metadata.timestamp', m.timestamp),
      );
    } catch (e) {
      return Promise.reject(errorFromThrown(e));
    }
    const result = new Promise<PublishResult>((resolve, reject) => {
      this.#pending.set(ticket, { resolve, reject });
    });
    this.#pump();
    return result;
  }

  /** Resolves once every published event is acknowledged or dead-lettered. */
  flush(): Promise<void> {
    if (this.#driver.isFlushed()) return Promise.resolve();
    return new Promise<void>((resolve) => this.#flushWaiters.push(resolve));
  }

  /** Every counter of the core's `ClientStats`, by name (the same names in every SDK). */
  stats(): ClientStats {
    return JSON.parse(this.#driver.stats()) as ClientStats;
  }

  /** The events the publish queue gave up on, with the reason. */
  deadLetters(): DeadLetter[] {
    const list = JSON.parse(this.#driver.deadLetters()) as Array<{
      id: string; type: string; channel: string; error: CoreErrorJson; attempts: number;
    }>;
    return list.map((d) => ({ id: d.id, type: d.type, channel: d.channel, error: errorFromCore(d.error), attempts: d.attempts }));
  }

  // --- driving the core (see crates/courier-wasm/src/driver.rs) ----------------------------

  /** Does what the driver's outputs say, then re-arms the timer and resolves `flush()`. */
  #pump(): void {
    const d = this.#driver;
    // Each output's payload is read before acting on it: a handler may call back into the
    // client (and so `poll` again) while the loop is on this output.
    for (let kind = d.poll(); kind !== undefined; kind = d.poll()) {
      switch (kind) {
        case OutputKind.OpenSocket:
          this.#open();
          break;
        case OutputKind.SendFrame:
          this.#socket?.send(d.text());
          break;
        case OutputKind.CloseSocket:
          this.#closeSocket(d.arg(), d.text());
          break;
        case OutputKind.FetchToken:
          this.#fetchToken();
          break;
        case OutputKind.SendBatch:
          this.#transmit(d.arg(), d.text(), d.token());
          break;
        case OutputKind.Event:
          this.#deliver(d.arg(), d.text());
          break;
        case OutputKind.State:
          this.#emit('state', d.text() as ConnectionState);
          break;
        case OutputKind.Gap:
          this.#emit('gap', JSON.parse(d.text()) as Gap);
          break;
        case OutputKind.SubscriptionFailed:
          this.#onSubscriptionFailed(d.arg(), d.text());
          break;
        case OutputKind.Published:
          this.#onPublished(d.arg(), d.text());
          break;
        case OutputKind.Error:
          this.#emit('error', errorFromCore(JSON.parse(d.text()) as CoreErrorJson));
          break;
      }
    }
    const ms = d.timeout();
    if (ms >= 0) {
      const at = performance.now() + ms;
      if (this.#timer === undefined || at < this.#timerAt) {
        if (this.#timer !== undefined) clearTimeout(this.#timer);
        this.#timerAt = at;
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.#timerAt = Infinity;
          this.#driver.handleTimeout();
          this.#pump();
        }, ms);
      }
    }
    if (this.#flushWaiters.length && d.isFlushed()) {
      const waiters = this.#flushWaiters;
      this.#flushWaiters = [];
      for (const w of waiters) w();
    }
  }

  #open(): void {
    this.#detach();
    let ws: Socket;
    try {
      ws = new (this.#ctor as unknown as new (url: string) => Socket)(this.#wsUrl);
    } catch (e) {
      this.#driver.handleClose(undefined, `cannot open WebSocket: ${describe(e)}`);
      return;
    }
    this.#socket = ws;
    // Node's `ws` throws on an error event nobody listens to; the close that follows counts.
    ws.onerror = () => {};
    ws.onopen = () => {
      if (this.#socket !== ws) return;
      this.#driver.handleOpen();
      this.#pump();
    };
    ws.onmessage = (e) => {
      if (this.#socket !== ws) return;
      // Protocol v1 is text only: a binary frame is the peer speaking something else.
      const text = typeof e.data === 'string' ? e.data : 'binary frame';
      // > 0: an event for that one listener and nothing else (the hot path: no `poll`).
      const r = this.#handleText(text);
      if (r > 0) this.#deliver(r, text);
      else if (r < 0) this.#pump();
    };
    ws.onclose = (e) => {
      if (this.#socket !== ws) return;
      this.#detach();
      this.#driver.handleClose(e.code, e.reason ?? '');
      this.#pump();
    };
  }

  /**
   * `driver.handleText(text)`, but written into WASM memory with `TextEncoder.encodeInto`
   * (native) instead of wasm-bindgen's per-character copy: the hot path of every event.
   */
  #handleText(text: string): number {
    const d = this.#driver;
    if (!wasmMemory) return d.handleText(text);
    // The inbox only moves when it grows: reuse the view (one call and no allocation per
    // frame) until it is too small or the memory grew (which detaches the old buffer).
    const max = text.length * 3;
    if (this.#inbox.length < max || this.#inbox.buffer !== wasmMemory.buffer) {
      const ptr = d.inbox(max);
      if (wasmBytes.buffer !== wasmMemory.buffer) wasmBytes = new Uint8Array(wasmMemory.buffer);
      this.#inbox = wasmBytes.subarray(ptr, ptr + max);
    }
    const { written } = encoder.encodeInto(text, this.#inbox);
    return d.handleBuffered(written);
  }

  /** Forgets the socket: no callback but `onerror` reaches the client any more. */
  #detach(): void {
    const ws = this.#socket;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = null;
    this.#socket = undefined;
  }

  #closeSocket(code: number, reason: string): void {
    const ws = this.#socket;
    this.#detach();
    if (!ws) return;
    try {
      ws.close(code, reason);
    } catch {
      ws.close();
    }
  }

  #transmit(batch: number, body: string, token: string): void {
    const signal = typeof AbortSignal.timeout === 'function' ? AbortSignal.timeout(this.#timeoutMs) : undefined;
    fetch(this.#publishUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body,
      signal,
    })
      .then(async (res) => {
        const headers: string[] = [];
        for (const name of LIMIT_HEADERS) {
          const v = res.headers.get(name);
          if (v !== null) headers.push(name, v);
        }
        const text = await res.text();
        this.#driver.handleResponse(batch, res.status, headers.join('\n'), text, Date.now());
      })
      .catch((e: unknown) => this.#driver.handleFailed(batch, describe(e)))
      .then(() => this.#pump());
  }

  #fetchToken(): void {
    const provider = this.#token;
    // Answer asynchronously: the driver is mid-pump when it asks.
    Promise.resolve()
      .then(() => (typeof provider === 'string' ? provider : provider()))
      .then(
        (token: unknown) => {
          if (typeof token === 'string') this.#driver.handleToken(token, undefined);
          else this.#driver.handleToken(undefined, `the token provider returned ${typeof token}, not a string`);
        },
        (e: unknown) => this.#driver.handleToken(undefined, e instanceof Error ? e.message : String(e)),
      )
      .then(() => this.#pump());
  }

  /** Hands the event in `json` (a frame or an `Event` output) to `listener`'s handler. */
  #deliver(listener: number, json: string): void {
    const entry = this.#handlers.get(listener);
    if (!entry) return;
    const f = JSON.parse(json) as DeliveryJson;
    const event = f.event;
    event.epoch = f.epoch;
    event.offset = f.offset;
    try {
      entry.handler(event);
    } catch (e) {
      this.#report(e);
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

  #onSubscriptionFailed(listener: number, json: string): void {
    const entry = this.#handlers.get(listener);
    this.#handlers.delete(listener);
    const err = errorFromCore(JSON.parse(json) as CoreErrorJson);
    if (entry) err.message = `subscription to ${entry.channel} failed: ${err.message}`;
    this.#emit('error', err);
  }

  #onPublished(ticket: number, json: string): void {
    const d = this.#pending.get(ticket);
    if (!d) return;
    this.#pending.delete(ticket);
    const r = JSON.parse(json) as { ok: PublishResult } | { error: CoreErrorJson };
    if ('ok' in r) d.resolve(r.ok);
    else d.reject(errorFromCore(r.error));
  }
}

/**
 * `CourierClient` of the main entry point: `BaseClient` (subscribing) plus publishing through
 * the core's queue, over the full WASM build.
 */
import { CoreClient, HistoryPager, endpoints as coreEndpoints } from './wasm/courier_wasm.js';
import type { CourierEventDataMap } from './events.generated.js';
import {
  BaseClient,
  count,
  text,
  type CourierClientOptions,
  type DeadLetter,
  type KnownEventType,
  type PublishOptions,
  type PublishResult,
} from './base.js';
import { CourierError, UsageError, errorFromCore, errorFromThrown, type CoreErrorJson } from './errors.js';

type Deferred = { resolve: (r: PublishResult) => void; reject: (e: CourierError) => void };

/**
 * The WebSocket URL and the `POST /publish/batch` URL the client uses for these options, as
 * the core derives them (`http(s)://` and `ws(s)://` both work; a trailing `/ws` names the
 * WebSocket endpoint). Throws a `ValidationError` for a URL the core refuses.
 */
export function endpoints(url: string, httpUrl?: string): { wsUrl: string; publishUrl: string } {
  try {
    return coreEndpoints(url, httpUrl);
  } catch (e) {
    throw errorFromThrown(e);
  }
}

/** The Courier client: subscribe to channels, publish events, never write reconnect code. */
export class CourierClient extends BaseClient {
  readonly #pending = new Map<number, Deferred>();
  #flushWaiters: Array<() => void> = [];

  constructor(options: CourierClientOptions) {
    super(options, (o, host, hi, lo) => new CoreClient(o, host, hi, lo), HistoryPager);
  }

  get #full(): CoreClient {
    return this.core as CoreClient;
  }

  /**
   * Publishes over HTTP through the core's queue (batching, idempotent retries, Retry-After,
   * client-side rate limiting); the core stamps the id, `metadata.timestamp` and
   * `metadata.source` (`serviceName`) unless given. Resolves when the server acknowledged the
   * event; rejects with a `CourierError` when it was refused or given up (it is then a dead
   * letter too). Invalid catalogue data rejects before anything is sent.
   */
  publish<K extends KnownEventType>(channel: string, type: K, data: CourierEventDataMap[K], options?: PublishOptions): Promise<PublishResult>;
  publish<T extends string>(channel: string, type: T extends KnownEventType ? never : T, data: unknown, options?: PublishOptions): Promise<PublishResult>;
  publish(channel: string, type: string, data: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    let ticket: number;
    try {
      const json = JSON.stringify(data);
      if (json === undefined) throw new UsageError('INVALID_ARGUMENT', 'data must be JSON-serialisable');
      const m = options.metadata ?? {};
      ticket = this.#full.publish(text('channel', channel) ?? '', text('type', type) ?? '', json, {
        priority: text('priority', options.priority),
        idempotencyKey: text('idempotencyKey', options.idempotencyKey),
        retry: options.retry ?? true,
        source: text('metadata.source', m.source),
        correlationId: text('metadata.correlation_id', m.correlation_id),
        userId: text('metadata.user_id', m.user_id),
        timestamp: count('metadata.timestamp', m.timestamp),
      });
    } catch (e) {
      return Promise.reject(errorFromThrown(e));
    }
    // The outcome comes later (after an HTTP answer), never during the call above.
    return new Promise<PublishResult>((resolve, reject) => {
      this.#pending.set(ticket, { resolve, reject });
    });
  }

  /** Resolves once every published event is acknowledged or dead-lettered. */
  flush(): Promise<void> {
    if (this.#full.watchFlush()) return Promise.resolve();
    return new Promise<void>((resolve) => this.#flushWaiters.push(resolve));
  }

  /** The events the publish queue gave up on, with the reason. */
  deadLetters(): DeadLetter[] {
    return this.#full.deadLetters().map((d) => ({
      id: d.id,
      type: d.type,
      channel: d.channel,
      error: errorFromCore(d.error as CoreErrorJson),
      attempts: d.attempts,
    }));
  }

  protected override onPublished(ticket: number, ok: object | undefined, error: object | undefined): void {
    const d = this.#pending.get(ticket);
    if (!d) return;
    this.#pending.delete(ticket);
    if (ok !== undefined) d.resolve(ok as PublishResult);
    else d.reject(errorFromCore(error as CoreErrorJson));
  }

  protected override onFlushed(): void {
    const waiters = this.#flushWaiters;
    this.#flushWaiters = [];
    for (const w of waiters) w();
  }
}

/**
 * React bindings: `<CourierProvider client={client}>`, `useCourier()`,
 * `useChannel(channel, handler)` and `useConnectionState()`.
 *
 * Safe under StrictMode: an effect that is mounted, unmounted and mounted again leaves
 * exactly one subscription, and a handler never runs after its component unmounted.
 * The client is created by the application (once, outside render) and is not closed by the
 * provider: close it when the application is done with it.
 */
import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useRef,
  useSyncExternalStore,
  type ReactElement,
  type ReactNode,
} from 'react';
import type { BaseClient, ConnectionState, CourierEvent } from './base.js';
import type { CourierClient } from './client.js';

const CourierContext = createContext<BaseClient | null>(null);

export interface CourierProviderProps {
  /** The client the hooks below use (from `courier-client` or `courier-client/subscriber`). */
  client: BaseClient;
  /** Call `client.connect()` on mount (default `true`; connecting twice is harmless). */
  connect?: boolean;
  children?: ReactNode;
}

/** Makes `client` available to `useCourier`, `useChannel` and `useConnectionState`. */
export function CourierProvider({ client, connect = true, children }: CourierProviderProps): ReactElement {
  useEffect(() => {
    if (connect) client.connect();
  }, [client, connect]);
  return createElement(CourierContext.Provider, { value: client }, children);
}

/**
 * The client from the nearest `CourierProvider`: `useCourier()` for the full client,
 * `useCourier<SubscriberClient>()` with the client of `courier-client/subscriber`.
 */
export function useCourier<C extends BaseClient = CourierClient>(): C {
  const client = useContext(CourierContext);
  if (!client) throw new Error('useCourier() needs a <CourierProvider client={…}> above it');
  return client as C;
}

/**
 * Calls `handler` for every event on `channel` while the component is mounted. The latest
 * `handler` is used without resubscribing; a new `channel` resubscribes.
 */
export function useChannel<E extends { type: string } = CourierEvent>(channel: string, handler: (event: E) => void): void {
  const client = useCourier<BaseClient>();
  const latest = useRef(handler);
  latest.current = handler;
  useEffect(() => {
    let active = true;
    const subscription = client.subscribe<E>(channel, (event) => {
      if (active) latest.current(event);
    });
    return () => {
      active = false;
      subscription.unsubscribe();
    };
  }, [client, channel]);
}

/** The connection's state, re-rendering when it changes. */
export function useConnectionState(): ConnectionState {
  const client = useCourier<BaseClient>();
  return useSyncExternalStore(
    (notify) => {
      client.on('state', notify);
      return () => {
        client.off('state', notify);
      };
    },
    () => client.state,
    () => client.state,
  );
}

/**
 * The Courier admin console, served by the reference server at `/admin`: log in with an
 * admin token, then live connections, channels with rates, a live tail, a channel's history,
 * a publish form and the rate-limit decisions. Built on the project's own SDK
 * (`courier-client` and `courier-client/react`) and the admin API (`/admin/api/*`).
 */
import { StrictMode, useCallback, useEffect, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { createRoot } from 'react-dom/client';
import { CourierClient, CourierError, type CustomEvent, type HistoryPage } from 'courier-client';
import { CourierProvider, useChannel, useConnectionState, useCourier } from 'courier-client/react';

/** The server is the page's origin: the console is served by the server it administers. */
const SERVER = window.location.origin;
const TOKEN_KEY = 'courier-admin-token';

type AnyEvent = CustomEvent & { epoch: string; offset: number };

/** An answer of the admin API or the server's error, as `{ error: { code, message, field } }`. */
interface ApiError {
  status: number;
  code: string;
  message: string;
  field?: string;
}

async function api<T>(token: string, path: string, init: RequestInit = {}): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`${SERVER}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...(init.headers ?? {}) },
    });
  } catch (e) {
    throw { status: 0, code: 'TRANSPORT', message: `the server is unreachable: ${String(e)}` } satisfies ApiError;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const e = (body as { error?: Partial<ApiError> }).error ?? {};
    throw { status: response.status, code: e.code ?? 'UNKNOWN', message: e.message ?? `HTTP ${response.status}`, field: e.field ?? undefined } satisfies ApiError;
  }
  return body as T;
}

const message = (e: unknown): string =>
  e instanceof CourierError ? `${e.code}: ${e.message}` : typeof e === 'object' && e !== null && 'message' in e ? String((e as ApiError).message) : String(e);

const time = (ms: number | null | undefined) => (ms ? new Date(ms).toLocaleTimeString() : '—');

/** Called when the admin API refuses the session's token (it expired): back to logging in. */
let onTokenRefused: (reason: string) => void = () => {};
/** The session's client, closed when the token is refused. */
let sessionClient: CourierClient | undefined;

/** Polls `path` every `everyMs` while mounted. */
function usePoll<T>(token: string, path: string, everyMs = 1000): { data?: T; error?: string } {
  const [state, setState] = useState<{ data?: T; error?: string }>({});
  useEffect(() => {
    let active = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        const data = await api<T>(token, path);
        if (active) setState({ data });
      } catch (e) {
        if (!active) return;
        if ((e as ApiError).status === 401) {
          onTokenRefused(message(e));
          return;
        }
        setState((s) => ({ ...s, error: message(e) }));
      }
      if (active) timer = setTimeout(tick, everyMs);
    };
    void tick();
    return () => {
      active = false;
      clearTimeout(timer);
    };
  }, [token, path, everyMs]);
  return state;
}

// ---- log in ------------------------------------------------------------------------------

function Login({ onToken, reason }: { onToken: (token: string) => void; reason?: string }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | undefined>(reason && `Logged out: the server refused the token (${reason}). Paste a new one.`);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    const t = token.trim();
    try {
      // Checks the token where it matters: the admin API refuses anything but an admin token.
      await api(t, '/admin/api/connections');
      onToken(t);
    } catch (err) {
      const a = err as ApiError;
      setError(
        a.status === 403
          ? `This token is valid but not an admin token (${a.message})`
          : a.status === 401
            ? `The server refused this token: ${a.message}`
            : message(err),
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main>
      <section>
        <h2>Log in</h2>
        <form onSubmit={submit} data-testid="login">
          <label htmlFor="token">Admin token (a JWT with role <code>admin</code>)</label>
          <textarea id="token" value={token} onChange={(e) => setToken(e.target.value)} placeholder="courier-server token --sub ops --role admin" required />
          <p>
            <button className="primary" type="submit" disabled={busy || !token.trim()}>
              Log in
            </button>
          </p>
          {error && (
            <p className="error" role="alert" data-testid="login-error">
              {error}
            </p>
          )}
        </form>
      </section>
    </main>
  );
}

// ---- connections -------------------------------------------------------------------------

interface ConnectionsReport {
  total: number;
  users: Record<string, number>;
  channels: Record<string, number>;
  connections: Array<{ session: string; user: string; role: string; client: string | null; connected_at_ms: number; channels: string[] }>;
}

function Connections({ token }: { token: string }) {
  const { data, error } = usePoll<ConnectionsReport>(token, '/admin/api/connections');
  return (
    <section>
      <h2>
        Live connections <small data-testid="connection-total">{data?.total ?? '…'}</small>
      </h2>
      {error && <p className="error">{error}</p>}
      <table data-testid="connections">
        <thead>
          <tr>
            <th>user</th>
            <th>role</th>
            <th>client</th>
            <th>channels</th>
            <th>since</th>
            <th>session</th>
          </tr>
        </thead>
        <tbody>
          {data?.connections.map((c) => (
            <tr key={c.session} data-user={c.user}>
              <td>{c.user}</td>
              <td>{c.role}</td>
              <td>{c.client ?? <span className="empty">none</span>}</td>
              <td>{c.channels.join(', ') || <span className="empty">none</span>}</td>
              <td>{time(c.connected_at_ms)}</td>
              <td>
                <code>{c.session}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.total === 0 && <p className="empty">No connection on this instance.</p>}
      {data && (
        <p>
          Per user:{' '}
          {Object.entries(data.users)
            .map(([u, n]) => `${u} (${n})`)
            .join(', ') || '—'}
        </p>
      )}
    </section>
  );
}

// ---- channels ----------------------------------------------------------------------------

interface ChannelsReport {
  channels: Array<{ channel: string; subscribers: number; rate_10s: number; rate_60s: number; events: number; last_event_ms: number | null }>;
}

function Channels({ token, onTail }: { token: string; onTail: (channel: string) => void }) {
  const { data, error } = usePoll<ChannelsReport>(token, '/admin/api/channels');
  return (
    <section>
      <h2>Channels</h2>
      {error && <p className="error">{error}</p>}
      <table data-testid="channels">
        <thead>
          <tr>
            <th>channel</th>
            <th>subscribers</th>
            <th>events/s (10 s)</th>
            <th>events/s (60 s)</th>
            <th>events</th>
            <th>last event</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {data?.channels.map((c) => (
            <tr key={c.channel} data-channel={c.channel}>
              <td>
                <code>{c.channel}</code>
              </td>
              <td>{c.subscribers}</td>
              <td>{c.rate_10s.toFixed(1)}</td>
              <td>{c.rate_60s.toFixed(2)}</td>
              <td data-testid="channel-events">{c.events}</td>
              <td>{time(c.last_event_ms)}</td>
              <td>
                <button onClick={() => onTail(c.channel)}>tail</button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.channels.length === 0 && <p className="empty">No channel subscribed or published to on this instance yet.</p>}
      <p className="empty">Counted on this instance (published through it, subscribed on it).</p>
    </section>
  );
}

// ---- live tail ---------------------------------------------------------------------------

const MAX_TAIL = 500;

function TailOf({ channel }: { channel: string }) {
  const [events, setEvents] = useState<AnyEvent[]>([]);
  const [paused, setPaused] = useState(false);
  const [missed, setMissed] = useState(0);
  const [filter, setFilter] = useState('');
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  useChannel<AnyEvent>(channel, (e) => {
    if (pausedRef.current) {
      setMissed((n) => n + 1);
      return;
    }
    setEvents((list) => [e, ...list].slice(0, MAX_TAIL));
  });
  const shown = filter ? events.filter((e) => e.type.startsWith(filter)) : events;
  return (
    <>
      <div className="row">
        <div>
          <label htmlFor="tail-filter">Filter by type (prefix)</label>
          <input id="tail-filter" value={filter} onChange={(e) => setFilter(e.target.value)} placeholder="backtest." />
        </div>
        <button
          className="primary"
          data-testid="tail-pause"
          onClick={() => {
            setPaused(!paused);
            if (paused) setMissed(0);
          }}
        >
          {paused ? 'Resume' : 'Pause'}
        </button>
        <button onClick={() => setEvents([])}>Clear</button>
      </div>
      {paused && <p data-testid="tail-paused">Paused: {missed} event(s) not shown.</p>}
      <EventTable events={shown} testid="tail" />
    </>
  );
}

function Tail({ channel, setChannel }: { channel: string; setChannel: (c: string) => void }) {
  const [draft, setDraft] = useState(channel);
  const state = useConnectionState();
  return (
    <section>
      <h2>
        Live tail <span className="badge" data-state={state}>{state}</span>
      </h2>
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          setChannel(draft.trim());
        }}
      >
        <div>
          <label htmlFor="tail-channel">Channel</label>
          <input id="tail-channel" value={draft} onChange={(e) => setDraft(e.target.value)} placeholder="backtest.demo" />
        </div>
        <button className="primary" type="submit" disabled={!draft.trim()}>
          Tail
        </button>
      </form>
      {/* A new channel remounts the tail: a fresh list and one subscription. */}
      {channel ? <TailOf key={channel} channel={channel} /> : <p className="empty">Choose a channel.</p>}
    </section>
  );
}

function EventTable({ events, testid }: { events: AnyEvent[]; testid: string }) {
  if (events.length === 0) return <p className="empty">No events.</p>;
  return (
    <table data-testid={testid}>
      <thead>
        <tr>
          <th>offset</th>
          <th>type</th>
          <th>time</th>
          <th>source</th>
          <th>data</th>
        </tr>
      </thead>
      <tbody>
        {events.map((e) => (
          <tr key={`${e.epoch}:${e.offset}`} data-offset={e.offset} data-type={e.type}>
            <td>{e.offset}</td>
            <td>
              <code>{e.type}</code>
            </td>
            <td>{time(e.metadata?.timestamp)}</td>
            <td>{e.metadata?.source}</td>
            <td>
              <pre>{JSON.stringify(e.data)}</pre>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

// ---- history -----------------------------------------------------------------------------

function History() {
  const client = useCourier();
  const [channel, setChannel] = useState('');
  const [direction, setDirection] = useState<'backward' | 'forward'>('backward');
  const [limit, setLimit] = useState(20);
  const pages = useRef<AsyncGenerator<HistoryPage<AnyEvent>, void, undefined>>(undefined);
  const [page, setPage] = useState<HistoryPage<AnyEvent>>();
  const [number, setNumber] = useState(0);
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const next = useCallback(async () => {
    if (!pages.current) return;
    setBusy(true);
    setError(undefined);
    try {
      const r = await pages.current.next();
      if (r.done) pages.current = undefined;
      else {
        setPage(r.value);
        setNumber((n) => n + 1);
        if (r.value.next === null) pages.current = undefined;
      }
    } catch (e) {
      pages.current = undefined;
      setError(message(e));
    } finally {
      setBusy(false);
    }
  }, []);

  const start = (e: FormEvent) => {
    e.preventDefault();
    setPage(undefined);
    setNumber(0);
    pages.current = client.history<AnyEvent>(channel.trim(), { direction, limit });
    void next();
  };

  return (
    <section>
      <h2>History</h2>
      <form className="row" onSubmit={start} data-testid="history-form">
        <div>
          <label htmlFor="history-channel">Channel</label>
          <input id="history-channel" value={channel} onChange={(e) => setChannel(e.target.value)} placeholder="backtest.demo" required />
        </div>
        <div>
          <label htmlFor="history-direction">Order</label>
          <select id="history-direction" value={direction} onChange={(e) => setDirection(e.target.value as 'backward' | 'forward')}>
            <option value="backward">newest first</option>
            <option value="forward">oldest first</option>
          </select>
        </div>
        <div>
          <label htmlFor="history-limit">Events per page</label>
          <input id="history-limit" type="number" min={1} max={1000} value={limit} onChange={(e) => setLimit(Number(e.target.value))} />
        </div>
        <button className="primary" type="submit" disabled={busy}>
          Load
        </button>
      </form>
      {error && (
        <p className="error" data-testid="history-error">
          {error}
        </p>
      )}
      {page && (
        <>
          <p data-testid="history-status">
            Page {number} · {page.events.length} event(s) · epoch <code>{page.epoch}</code> · latest offset {page.latest}
            {page.next === null ? ' · end reached' : ''}
          </p>
          <p>
            <button className="primary" data-testid="history-next" disabled={busy || page.next === null} onClick={() => void next()}>
              Next page
            </button>
          </p>
          <EventTable events={page.events} testid="history" />
        </>
      )}
    </section>
  );
}

// ---- publish -----------------------------------------------------------------------------

function Publish({ token }: { token: string }) {
  const [channel, setChannel] = useState('');
  const [type, setType] = useState('backtest.progress');
  const [id, setId] = useState('');
  const [data, setData] = useState('{\n  "backtest_id": "b1",\n  "percent": 50\n}');
  const [fieldError, setFieldError] = useState<{ field: string; message: string; code: string }>();
  const [result, setResult] = useState<string>();
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setFieldError(undefined);
    setResult(undefined);
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch (err) {
      setFieldError({ field: 'data', code: 'INVALID_JSON', message: `not JSON: ${String(err)}` });
      return;
    }
    setBusy(true);
    try {
      // Straight to the server, so what it refuses is shown as it says it, field by field.
      const body: Record<string, unknown> = { type, data: parsed };
      if (id.trim()) body.id = id.trim();
      const ok = await api<{ id: string; offset: number; epoch: string; duplicate: boolean }>(token, `/publish/${encodeURIComponent(channel.trim())}`, {
        method: 'POST',
        body: JSON.stringify(body),
      });
      setResult(`Published ${ok.id} at offset ${ok.offset}${ok.duplicate ? ' (duplicate of an earlier publish)' : ''}`);
    } catch (err) {
      const a = err as ApiError;
      setFieldError({ field: a.field ?? 'form', code: a.code, message: a.message });
    } finally {
      setBusy(false);
    }
  };

  /** The error of `name` (the server's `field` is `data.percent` for a member of `data`). */
  const errorOf = (name: string): ReactNode => {
    if (!fieldError) return null;
    const f = fieldError.field;
    if (f !== name && !f.startsWith(`${name}.`) && !f.startsWith(`${name}[`)) return null;
    return (
      <div className="field-error" role="alert" data-testid={`error-${name}`} data-field={f}>
        <code>{f}</code>: {fieldError.message} ({fieldError.code})
      </div>
    );
  };
  const invalid = (name: string) => (fieldError && (fieldError.field === name || fieldError.field.startsWith(`${name}.`)) ? true : undefined);
  const known = ['channel', 'type', 'id', 'data'];

  return (
    <section>
      <h2>Publish</h2>
      <form onSubmit={submit} data-testid="publish-form">
        <label htmlFor="publish-channel">Channel</label>
        <input id="publish-channel" value={channel} onChange={(e) => setChannel(e.target.value)} aria-invalid={invalid('channel')} required />
        {errorOf('channel')}
        <label htmlFor="publish-type">Type</label>
        <input id="publish-type" value={type} onChange={(e) => setType(e.target.value)} aria-invalid={invalid('type')} />
        {errorOf('type')}
        <label htmlFor="publish-id">Id (optional: the server assigns one; the same id twice is published once)</label>
        <input id="publish-id" value={id} onChange={(e) => setId(e.target.value)} aria-invalid={invalid('id')} />
        {errorOf('id')}
        <label htmlFor="publish-data">Data (JSON)</label>
        <textarea id="publish-data" value={data} onChange={(e) => setData(e.target.value)} aria-invalid={invalid('data')} />
        {errorOf('data')}
        {fieldError && !known.some((k) => fieldError.field === k || fieldError.field.startsWith(`${k}.`)) && (
          <p className="error" role="alert" data-testid="error-form">
            {fieldError.field !== 'form' && <code>{fieldError.field}: </code>}
            {fieldError.message} ({fieldError.code})
          </p>
        )}
        <p>
          <button className="primary" type="submit" disabled={busy || !channel.trim()}>
            Publish
          </button>
        </p>
        {result && (
          <p className="ok" data-testid="publish-result">
            {result}
          </p>
        )}
      </form>
    </section>
  );
}

// ---- rate limits -------------------------------------------------------------------------

interface RateLimitsReport {
  enabled: boolean;
  window_secs: number;
  kept: number;
  minutes: Array<{ minute_ms: number; bucket: string; allowed: number; blocked: number; shadow_blocked: number }>;
  refusals: Array<{ at_ms: number; user: string; tier: string; channel: string; type: string; bucket: string; shadow: boolean; retry_after_ms: number | null }>;
}

function RateLimits({ token }: { token: string }) {
  const { data, error } = usePoll<RateLimitsReport>(token, '/admin/api/rate-limits', 2000);
  return (
    <section>
      <h2>Rate-limit decisions (last {data ? data.window_secs / 60 : 10} minutes, this instance)</h2>
      {error && <p className="error">{error}</p>}
      {data && !data.enabled && <p>Rate limits are off on this server.</p>}
      <h3>Per minute</h3>
      <table data-testid="rate-minutes">
        <thead>
          <tr>
            <th>minute</th>
            <th>bucket</th>
            <th>allowed</th>
            <th>refused</th>
            <th>shadow</th>
          </tr>
        </thead>
        <tbody>
          {data?.minutes.map((m) => (
            <tr key={`${m.minute_ms}:${m.bucket}`} data-bucket={m.bucket}>
              <td>{time(m.minute_ms)}</td>
              <td>
                <code>{m.bucket}</code>
              </td>
              <td>{m.allowed}</td>
              <td>{m.blocked}</td>
              <td>{m.shadow_blocked}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Refused events (newest first, at most {data?.kept ?? '…'} kept)</h3>
      {data && data.refusals.length === 0 ? (
        <p className="empty">None.</p>
      ) : (
        <table data-testid="rate-refusals">
          <thead>
            <tr>
              <th>time</th>
              <th>user</th>
              <th>tier</th>
              <th>channel</th>
              <th>type</th>
              <th>bucket</th>
              <th>retry after</th>
            </tr>
          </thead>
          <tbody>
            {data?.refusals.map((r, i) => (
              <tr key={`${r.at_ms}:${i}`} data-user={r.user}>
                <td>{time(r.at_ms)}</td>
                <td>{r.user}</td>
                <td>{r.tier}</td>
                <td>{r.channel}</td>
                <td>{r.type}</td>
                <td>
                  <code>{r.bucket}</code>
                  {r.shadow ? ' (shadow)' : ''}
                </td>
                <td>{r.retry_after_ms === null ? '—' : `${r.retry_after_ms} ms`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

// ---- the shell ---------------------------------------------------------------------------

const PAGES = ['connections', 'channels', 'tail', 'history', 'publish', 'rate limits'] as const;
type Page = (typeof PAGES)[number];

function Console({ token, onLogout }: { token: string; onLogout: () => void }) {
  const [page, setPage] = useState<Page>('connections');
  const [tailChannel, setTailChannel] = useState('');
  // One client for the session (this component is keyed by the token); the provider
  // connects it, logging out closes it.
  const [client] = useState(() => new CourierClient({ url: SERVER, token, clientName: 'courier-admin-console/0.1.0' }));
  sessionClient = client;
  const logout = () => {
    client.close();
    onLogout();
  };
  return (
    <CourierProvider client={client}>
      <header>
        <h1>Courier admin</h1>
        <nav>
          {PAGES.map((p) => (
            <button key={p} aria-current={p === page ? 'page' : undefined} onClick={() => setPage(p)} data-testid={`nav-${p.replace(' ', '-')}`}>
              {p}
            </button>
          ))}
        </nav>
        <span className="spacer" />
        <button onClick={logout}>Log out</button>
      </header>
      <main>
        {page === 'connections' && <Connections token={token} />}
        {page === 'channels' && (
          <Channels
            token={token}
            onTail={(c) => {
              setTailChannel(c);
              setPage('tail');
            }}
          />
        )}
        {/* The tail stays mounted (hidden) on other pages, so it keeps its events. */}
        <div hidden={page !== 'tail'}>
          <Tail channel={tailChannel} setChannel={setTailChannel} />
        </div>
        {page === 'history' && <History />}
        {page === 'publish' && <Publish token={token} />}
        {page === 'rate limits' && <RateLimits token={token} />}
      </main>
    </CourierProvider>
  );
}

function App() {
  const [token, setToken] = useState<string | null>(() => sessionStorage.getItem(TOKEN_KEY));
  const [refused, setRefused] = useState<string>();
  onTokenRefused = (reason) => {
    sessionClient?.close();
    sessionClient = undefined;
    sessionStorage.removeItem(TOKEN_KEY);
    setRefused(reason);
    setToken(null);
  };
  if (!token) {
    return (
      <>
        <header>
          <h1>Courier admin</h1>
        </header>
        <Login
          reason={refused}
          onToken={(t) => {
            setRefused(undefined);
            sessionStorage.setItem(TOKEN_KEY, t);
            setToken(t);
          }}
        />
      </>
    );
  }
  return (
    <Console
      key={token}
      token={token}
      onLogout={() => {
        sessionStorage.removeItem(TOKEN_KEY);
        setToken(null);
      }}
    />
  );
}

createRoot(document.getElementById('root')!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);

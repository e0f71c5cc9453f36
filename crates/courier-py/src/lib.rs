//! `courier_client._native`: the pyo3 glue between the pure-Python package `courier_client`
//! and the Rust client (`courier-client` driving `courier-core`).
//!
//! Private by design: the public API is written in Python (`python/courier_client/`). This
//! module only translates: Python values to core types and back, core errors to the
//! exception classes defined in `courier_client.errors`, and waiting (blocking with the GIL
//! released and Ctrl-C honoured, or resolving asyncio futures in batches).

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use courier_client::{
    Client, ClientConfig, ClientEvent, History, HistoryPage, HistoryQuery, HistoryStart,
    Subscription, SubscriptionItem, TokenProvider,
};
use courier_core::client::{EventOptions, PublishItem};
use courier_core::connection::{ConnectionConfig, GapReason, State};
use courier_core::queue::{PublishOptions, PublishResult, QueueConfig};
use courier_core::{Error, Metadata, StreamPosition, UsageError, ValidationError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

mod logs;

// ------------------------------------------------------------------------------------------
// Errors: core errors become the exception classes of `courier_client.errors`.
// ------------------------------------------------------------------------------------------

/// The exception instance for a core error (built by `courier_client.errors._from_native`,
/// which picks the class from the core's category).
fn exception<'py>(py: Python<'py>, e: &Error) -> Bound<'py, PyAny> {
    let (message, field, reason, retry_after_ms, limit_type, status) = match e {
        Error::Invalid(v) => (
            v.message.clone(),
            Some(v.field.clone()),
            Some(kind_str(v)),
            None,
            None,
            None,
        ),
        Error::Refused(r) => (
            r.message.clone(),
            r.field.clone(),
            None,
            r.retry_after.map(courier_core::time::as_millis_u64),
            r.limit_type.clone(),
            r.status,
        ),
        other => (other.to_string(), None, None, None, None, None),
    };
    let made = py.import("courier_client.errors").and_then(|m| {
        m.getattr("_from_native")?.call1((
            e.code(),
            e.category().as_str(),
            e.is_retryable(),
            message.clone(),
            field,
            reason,
            retry_after_ms,
            limit_type,
            status,
        ))
    });
    match made {
        Ok(exc) => exc,
        Err(err) => err.into_value(py).into_bound(py).into_any(),
    }
}

fn kind_str(v: &ValidationError) -> String {
    serde_json::to_value(v.kind)
        .ok()
        .and_then(|k| k.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn to_pyerr(e: &Error) -> PyErr {
    Python::attach(|py| PyErr::from_value(exception(py, e)))
}

fn timeout_error(after: Duration) -> PyErr {
    to_pyerr(&UsageError::Timeout(after).into())
}

// ------------------------------------------------------------------------------------------
// Values crossing to Python.
// ------------------------------------------------------------------------------------------

/// An outcome waiting to be turned into a Python value (with the GIL).
enum Outcome {
    Publish(Result<PublishResult, Error>),
    Unit(Result<(), Error>),
    Item(Option<SubscriptionItem>),
    Ready(Result<StreamPosition, Error>),
    Page(Option<Result<HistoryPage, Error>>),
}

fn publish_tuple<'py>(py: Python<'py>, r: &PublishResult) -> PyResult<Bound<'py, PyAny>> {
    Ok((
        r.id.as_str(),
        r.channel.as_str(),
        r.epoch.as_str(),
        r.offset,
        r.duplicate,
        r.attempts,
    )
        .into_pyobject(py)?
        .into_any())
}

fn gap_reason(r: GapReason) -> &'static str {
    match r {
        GapReason::HistoryUnavailable => "history_unavailable",
        GapReason::EpochChanged => "epoch_changed",
        GapReason::OffsetSkipped => "offset_skipped",
    }
}

/// `("event", (id, type, channel, data_json), metadata, epoch, offset)`: a delivered event, as
/// `courier_client._types._received` reads it (subscriptions and history pages alike).
fn delivery_tuple<'py>(py: Python<'py>, d: &courier_core::Delivery) -> PyResult<Bound<'py, PyAny>> {
    let e = &d.event;
    let meta = (
        e.metadata.timestamp,
        e.metadata.source.as_str(),
        e.metadata.correlation_id.as_deref(),
        e.metadata.user_id.as_deref(),
    );
    Ok((
        "event",
        (
            e.id.as_str(),
            e.event_type.as_str(),
            e.channel.as_str(),
            e.data.get(),
        ),
        meta,
        d.epoch.as_str(),
        d.offset,
    )
        .into_pyobject(py)?
        .into_any())
}

/// `("page", channel, epoch, latest, [event tuples], next)` or `("end", None)`.
fn page_tuple<'py>(py: Python<'py>, page: Option<HistoryPage>) -> PyResult<Bound<'py, PyAny>> {
    let Some(page) = page else {
        return Ok(("end", py.None()).into_pyobject(py)?.into_any());
    };
    let events = page
        .events
        .iter()
        .map(|d| delivery_tuple(py, d))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((
        "page",
        page.channel,
        page.epoch,
        page.latest,
        PyList::new(py, events)?,
        page.next,
    )
        .into_pyobject(py)?
        .into_any())
}

fn item_tuple<'py>(py: Python<'py>, item: Option<SubscriptionItem>) -> PyResult<Bound<'py, PyAny>> {
    let Some(item) = item else {
        return Ok(("end", py.None()).into_pyobject(py)?.into_any());
    };
    Ok(match item {
        SubscriptionItem::Event(d) => delivery_tuple(py, &d)?,
        SubscriptionItem::Subscribed {
            recovered,
            position,
        } => ("subscribed", recovered, position.epoch, position.offset)
            .into_pyobject(py)?
            .into_any(),
        SubscriptionItem::Gap {
            last,
            position,
            reason,
        } => (
            "gap",
            gap_reason(reason),
            last.as_ref().map(|l| (l.epoch.as_str(), l.offset)),
            (position.epoch.as_str(), position.offset),
        )
            .into_pyobject(py)?
            .into_any(),
        SubscriptionItem::Ended(e) => {
            let exc = match e {
                Some(e) => exception(py, &e).unbind(),
                None => py.None(),
            };
            ("end", exc).into_pyobject(py)?.into_any()
        }
        other => ("unknown", format!("{other:?}"))
            .into_pyobject(py)?
            .into_any(),
    })
}

/// `(ok, value)` for an outcome: a value, or an exception instance.
fn outcome_value<'py>(py: Python<'py>, outcome: Outcome) -> PyResult<(bool, Bound<'py, PyAny>)> {
    Ok(match outcome {
        Outcome::Publish(Ok(r)) => (true, publish_tuple(py, &r)?),
        Outcome::Publish(Err(e)) | Outcome::Unit(Err(e)) | Outcome::Ready(Err(e)) => {
            (false, exception(py, &e))
        }
        Outcome::Unit(Ok(())) => (true, py.None().into_bound(py)),
        Outcome::Item(item) => (true, item_tuple(py, item)?),
        Outcome::Ready(Ok(p)) => (true, (p.epoch, p.offset).into_pyobject(py)?.into_any()),
        Outcome::Page(Some(Err(e))) => (false, exception(py, &e)),
        Outcome::Page(Some(Ok(page))) => (true, page_tuple(py, Some(page))?),
        Outcome::Page(None) => (true, page_tuple(py, None)?),
    })
}

// ------------------------------------------------------------------------------------------
// Token provider: a Python callable `provider(refresh, reply)`.
// ------------------------------------------------------------------------------------------

/// The answer slot handed to a Python token provider: call it once with `(token, None)` or
/// `(None, error_message)`.
#[pyclass(frozen, module = "courier_client._native")]
struct TokenReply {
    tx: Mutex<Option<oneshot::Sender<Result<String, String>>>>,
}

#[pymethods]
impl TokenReply {
    #[pyo3(signature = (token, error=None))]
    fn __call__(&self, token: Option<String>, error: Option<String>) {
        let result = match (token, error) {
            (Some(t), None) => Ok(t),
            (_, Some(e)) => Err(e),
            (None, None) => Err("the token provider returned None".into()),
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(result);
        }
    }
}

struct PyTokenProvider {
    callable: Arc<Py<PyAny>>,
}

impl TokenProvider for PyTokenProvider {
    fn token(&self, refresh: bool) -> courier_client::BoxFuture<Result<String, String>> {
        let callable = self.callable.clone();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let reply = TokenReply {
                tx: Mutex::new(Some(tx)),
            };
            let called = tokio::task::spawn_blocking(move || {
                Python::try_attach(|py| {
                    callable
                        .call1(py, (refresh, reply))
                        .map(drop)
                        .map_err(|e| e.to_string())
                })
                .unwrap_or_else(|| Err("the Python interpreter is shutting down".into()))
            })
            .await
            .map_err(|e| e.to_string())?;
            called?;
            rx.await
                .map_err(|_| "the token provider never answered".to_owned())?
        })
    }
}

// ------------------------------------------------------------------------------------------
// The client.
// ------------------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct Options {
    queue: Option<QueueConfig>,
    connection: Option<ConnectionConfig>,
    request_timeout_ms: Option<u64>,
    worker_threads: Option<usize>,
    client_name: Option<String>,
    subscription_buffer: Option<usize>,
}

type Dispatch = mpsc::UnboundedSender<(Py<PyAny>, Outcome)>;

/// Resolves asyncio futures: takes every outcome ready at once and hands the batch to the
/// Python `dispatch` callable under one GIL acquisition.
async fn dispatcher(mut rx: mpsc::UnboundedReceiver<(Py<PyAny>, Outcome)>, dispatch: Py<PyAny>) {
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        while let Ok(more) = rx.try_recv() {
            items.push(more);
        }
        let dispatch = &dispatch;
        let run = move || {
            Python::try_attach(|py| -> PyResult<()> {
                let mut values = Vec::with_capacity(items.len());
                for (fut, outcome) in items {
                    let (ok, value) = outcome_value(py, outcome)?;
                    values.push(PyTuple::new(
                        py,
                        [
                            fut.into_bound(py),
                            ok.into_pyobject(py)?.to_owned().into_any(),
                            value,
                        ],
                    )?);
                }
                dispatch.call1(py, (PyList::new(py, values)?,))?;
                Ok(())
            })
        };
        if let Some(Err(e)) = tokio::task::block_in_place(run) {
            Python::try_attach(|py| e.print(py));
        }
    }
}

fn parse_since(since: Option<(String, u64)>) -> Option<StreamPosition> {
    since.map(|(epoch, offset)| StreamPosition { epoch, offset })
}

#[pyclass(frozen, module = "courier_client._native")]
struct NativeClient {
    client: Client,
    handle: tokio::runtime::Handle,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    dispatch: Option<Dispatch>,
}

/// Blocks on `fut` with the GIL released, waking every 50 ms to let Python handle signals
/// (Ctrl-C raises `KeyboardInterrupt` in the caller). `None` when `timeout` passed.
fn block_on<F>(
    py: Python<'_>,
    handle: &tokio::runtime::Handle,
    fut: F,
    timeout: Option<f64>,
) -> PyResult<Option<F::Output>>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut fut = Box::pin(fut);
    let deadline = timeout.map(|t| std::time::Instant::now() + Duration::from_secs_f64(t.max(0.0)));
    loop {
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                left.min(Duration::from_millis(50))
            }
            None => Duration::from_millis(50),
        };
        let polled =
            py.detach(|| handle.block_on(async { tokio::time::timeout(slice, &mut fut).await }));
        if let Ok(out) = polled {
            return Ok(Some(out));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(None);
        }
    }
}

fn priority_of(p: &str) -> PyResult<courier_core::queue::Priority> {
    p.parse()
        .map_err(|e: ValidationError| to_pyerr(&Error::Invalid(e)))
}

/// One event as the Python layer hands it over.
type EventArgs = (
    String,         // channel
    String,         // event type
    String,         // data as JSON
    String,         // priority
    bool,           // retry
    Option<String>, // idempotency key
    Option<String>, // metadata as JSON
);

impl NativeClient {
    /// The item for the core, which stamps and validates it.
    fn build_item(args: EventArgs) -> Result<PublishItem, PyErr> {
        let (channel, event_type, data, priority, retry, key, metadata) = args;
        let metadata = match metadata {
            Some(m) => Some(serde_json::from_str::<Metadata>(&m).map_err(|e| {
                to_pyerr(&Error::Invalid(ValidationError::new(
                    "metadata",
                    courier_core::ValidationKind::WrongType,
                    format!(
                        "metadata must be {{timestamp?, source?, correlation_id?, user_id?}}: {e}"
                    ),
                )))
            })?),
            None => None,
        };
        Ok(PublishItem {
            channel,
            event_type,
            data_json: data,
            event: EventOptions {
                idempotency_key: key,
                metadata,
            },
            options: PublishOptions {
                priority: priority_of(&priority)?,
                retry,
            },
        })
    }

    fn dispatch(&self) -> PyResult<&Dispatch> {
        loop_dispatch(self.dispatch.as_ref())
    }

    fn spawn_outcome<F>(&self, fut: Py<PyAny>, work: F) -> PyResult<()>
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        spawn_outcome(self.dispatch.as_ref(), &self.handle, fut, work)
    }
}

/// The event loop's dispatcher, or the error saying the client was made without one.
fn loop_dispatch(dispatch: Option<&Dispatch>) -> PyResult<&Dispatch> {
    dispatch.ok_or_else(|| PyRuntimeError::new_err("this client was created without an event loop"))
}

/// Resolves the asyncio future `fut` with the outcome of `work`, run on `handle`.
fn spawn_outcome<F>(
    dispatch: Option<&Dispatch>,
    handle: &tokio::runtime::Handle,
    fut: Py<PyAny>,
    work: F,
) -> PyResult<()>
where
    F: Future<Output = Outcome> + Send + 'static,
{
    let tx = loop_dispatch(dispatch)?.clone();
    handle.spawn(async move {
        let outcome = work.await;
        let _ = tx.send((fut, outcome));
    });
    Ok(())
}

/// Blocks (GIL released) until `work` has its outcome: its value, or its exception raised;
/// `CourierTimeoutError` once `timeout` seconds passed.
fn wait_outcome<'py, F>(
    py: Python<'py>,
    handle: &tokio::runtime::Handle,
    work: F,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Outcome> + Send,
{
    let Some(outcome) = block_on(py, handle, work, timeout)? else {
        return Err(timeout_error(Duration::from_secs_f64(
            timeout.unwrap_or(0.0),
        )));
    };
    let (ok, value) = outcome_value(py, outcome)?;
    if ok {
        Ok(value)
    } else {
        Err(PyErr::from_value(value))
    }
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (base_url, token, token_provider, service_name, options_json, listener, dispatch))]
    fn new(
        base_url: String,
        token: Option<String>,
        token_provider: Option<Py<PyAny>>,
        service_name: Option<String>,
        options_json: &str,
        listener: Option<Py<PyAny>>,
        dispatch: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let options: Options = serde_json::from_str(options_json)
            .map_err(|e| PyRuntimeError::new_err(format!("bad options: {e}")))?;
        let tokens: Arc<dyn TokenProvider> = match (token, token_provider) {
            (Some(t), _) => Arc::new(courier_client::StaticToken(t)),
            (None, Some(p)) => Arc::new(PyTokenProvider {
                callable: Arc::new(p),
            }),
            (None, None) => {
                return Err(PyRuntimeError::new_err(
                    "a token or a token provider is required",
                ));
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.worker_threads.unwrap_or(1).max(1))
            .max_blocking_threads(4)
            .thread_name("courier-client")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let mut config = ClientConfig::new(base_url);
        config.core.service_name = service_name.unwrap_or_default();
        if let Some(q) = options.queue {
            config.core.queue = q;
        }
        if let Some(c) = options.connection {
            config.core.connection = c;
        }
        config.core.connection.client_name = options
            .client_name
            .unwrap_or_else(|| concat!("courier-py/", env!("CARGO_PKG_VERSION")).into());
        if let Some(ms) = options.request_timeout_ms {
            config.request_timeout = Duration::from_millis(ms);
        }
        if let Some(n) = options.subscription_buffer {
            config.core.subscription_buffer = Some(n);
        }
        if let Some(listener) = listener {
            let listener = Arc::new(listener);
            config.listener = Some(Arc::new(move |event: ClientEvent| {
                let listener = listener.clone();
                // Never call Python from the driver itself: it may hold no lock, but it
                // must not wait for the GIL either.
                tokio::task::spawn_blocking(move || {
                    Python::try_attach(|py| {
                        let result = match event {
                            ClientEvent::State(s) => {
                                listener.call1(py, ("state", state_str(s), py.None()))
                            }
                            ClientEvent::Error(e) => {
                                let exc = exception(py, &e).unbind();
                                listener.call1(py, ("error", py.None(), exc))
                            }
                            _ => Ok(py.None()),
                        };
                        if let Err(e) = result {
                            e.print(py);
                        }
                    });
                });
            }));
        }
        let client = Client::with_handle(config, tokens, &handle).map_err(|e| to_pyerr(&e))?;
        let dispatch = dispatch.map(|d| {
            let (tx, rx) = mpsc::unbounded_channel();
            handle.spawn(dispatcher(rx, d));
            tx
        });
        Ok(Self {
            client,
            handle,
            runtime: Mutex::new(Some(runtime)),
            dispatch,
        })
    }

    /// Queues one event and resolves `fut` with its outcome; returns its ticket (for
    /// `cancel`). Raises at once for invalid input, a full queue or a closed client.
    fn publish_start(&self, args: EventArgs, fut: Py<PyAny>) -> PyResult<u64> {
        let item = Self::build_item(args)?;
        let tx = self.dispatch()?.clone();
        self.client
            .publisher()
            .enqueue(
                item,
                Box::new(move |r| {
                    let _ = tx.send((fut, Outcome::Publish(r)));
                }),
            )
            .map_err(|e| to_pyerr(&e))
    }

    /// Withdraws queued events that were never sent (their futures are then never
    /// resolved); returns how many were. Sent ones are left to finish.
    fn cancel(&self, tickets: Vec<u64>) -> usize {
        let publisher = self.client.publisher();
        tickets.into_iter().filter(|t| publisher.cancel(*t)).count()
    }

    /// Queues several events (all or none) and resolves each future with its outcome.
    fn publish_many_start(
        &self,
        events: Vec<EventArgs>,
        futs: Vec<Py<PyAny>>,
    ) -> PyResult<Vec<u64>> {
        let tx = self.dispatch()?.clone();
        let mut items = Vec::with_capacity(events.len());
        for (args, fut) in events.into_iter().zip(futs) {
            let item = Self::build_item(args)?;
            let tx = tx.clone();
            let done: courier_client::Completer = Box::new(move |r| {
                let _ = tx.send((fut, Outcome::Publish(r)));
            });
            items.push((item, done));
        }
        self.client
            .publisher()
            .enqueue_many(items)
            .map_err(|e| to_pyerr(&e))
    }

    /// Publishes one event and blocks until it is acknowledged (GIL released).
    #[pyo3(signature = (args, timeout=None))]
    fn publish_wait<'py>(
        &self,
        py: Python<'py>,
        args: EventArgs,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let item = Self::build_item(args)?;
        let (tx, rx) = oneshot::channel();
        let publisher = self.client.publisher();
        let ticket = publisher
            .enqueue(
                item,
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            )
            .map_err(|e| to_pyerr(&e))?;
        // Given up on (a timeout, Ctrl-C): an event not sent yet is withdrawn.
        let waited = block_on(py, &self.handle, rx, timeout);
        if !matches!(waited, Ok(Some(_))) {
            publisher.cancel(ticket);
        }
        match waited? {
            None => Err(timeout_error(Duration::from_secs_f64(
                timeout.unwrap_or(0.0),
            ))),
            Some(Err(_)) => Err(to_pyerr(&Error::Transport("the publisher stopped".into()))),
            Some(Ok(Ok(r))) => publish_tuple(py, &r),
            Some(Ok(Err(e))) => Err(to_pyerr(&e)),
        }
    }

    /// Publishes several events (all or none queued) and blocks until every one has an
    /// outcome; returns `[(ok, value), …]` in order.
    #[pyo3(signature = (events, timeout=None))]
    fn publish_many_wait<'py>(
        &self,
        py: Python<'py>,
        events: Vec<EventArgs>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut items = Vec::with_capacity(events.len());
        let mut rxs = Vec::with_capacity(events.len());
        for args in events {
            let item = Self::build_item(args)?;
            let (tx, rx) = oneshot::channel();
            rxs.push(rx);
            let done: courier_client::Completer = Box::new(move |r| {
                let _ = tx.send(r);
            });
            items.push((item, done));
        }
        let publisher = self.client.publisher();
        let tickets = publisher.enqueue_many(items).map_err(|e| to_pyerr(&e))?;
        let all = async move {
            let mut out = Vec::with_capacity(rxs.len());
            for rx in rxs {
                out.push(
                    rx.await
                        .unwrap_or_else(|_| Err(Error::Transport("the publisher stopped".into()))),
                );
            }
            out
        };
        let waited = block_on(py, &self.handle, all, timeout);
        if !matches!(waited, Ok(Some(_))) {
            for t in tickets {
                publisher.cancel(t);
            }
        }
        let Some(results) = waited? else {
            return Err(timeout_error(Duration::from_secs_f64(
                timeout.unwrap_or(0.0),
            )));
        };
        let mut values = Vec::with_capacity(results.len());
        for r in results {
            let (ok, value) = outcome_value(py, Outcome::Publish(r))?;
            values.push(PyTuple::new(
                py,
                [ok.into_pyobject(py)?.to_owned().into_any(), value],
            )?);
        }
        PyList::new(py, values)
    }

    fn flush_start(&self, fut: Py<PyAny>) -> PyResult<()> {
        let client = self.client.clone();
        self.spawn_outcome(fut, async move {
            client.flush().await;
            Outcome::Unit(Ok(()))
        })
    }

    /// Blocks until every queued event has an outcome; False on timeout.
    #[pyo3(signature = (timeout=None))]
    fn flush_wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let client = self.client.clone();
        Ok(block_on(
            py,
            &self.handle,
            async move { client.flush().await },
            timeout,
        )?
        .is_some())
    }

    fn close_start(&self, fut: Py<PyAny>) -> PyResult<()> {
        let client = self.client.clone();
        self.spawn_outcome(fut, async move {
            client.close().await;
            Outcome::Unit(Ok(()))
        })
    }

    /// Sends what is queued and closes the connection; False when `timeout` passed first.
    #[pyo3(signature = (timeout=None))]
    fn close_wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let client = self.client.clone();
        Ok(block_on(
            py,
            &self.handle,
            async move { client.close().await },
            timeout,
        )?
        .is_some())
    }

    /// Stops the runtime and joins its threads (call after close).
    fn shutdown(&self, py: Python<'_>) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rt) = runtime {
            py.detach(|| rt.shutdown_timeout(Duration::from_secs(2)));
        }
    }

    #[pyo3(signature = (channel, since=None))]
    fn subscribe(
        &self,
        channel: &str,
        since: Option<(String, u64)>,
    ) -> PyResult<NativeSubscription> {
        let sub = self
            .client
            .subscribe(channel, parse_since(since))
            .map_err(|e| to_pyerr(&e))?;
        Ok(NativeSubscription {
            sub: Arc::new(tokio::sync::Mutex::new(Some(sub))),
            cancel: tokio::sync::watch::channel(false).0,
            handle: self.handle.clone(),
            dispatch: self.dispatch.clone(),
        })
    }

    /// A reader of `channel`'s history (the replay API); the query is checked here, with the
    /// core's rules (at most one start, `limit` 1 to 1000).
    #[pyo3(signature = (channel, after=None, before=None, since_ms=None, cursor=None, backward=None, limit=100))]
    #[allow(clippy::too_many_arguments)]
    fn history(
        &self,
        channel: &str,
        after: Option<u64>,
        before: Option<u64>,
        since_ms: Option<u64>,
        cursor: Option<String>,
        backward: Option<bool>,
        limit: u32,
    ) -> PyResult<NativeHistory> {
        let start = HistoryStart::from_parts(after, before, since_ms, cursor, backward)
            .map_err(|e| to_pyerr(&e.into()))?;
        let history = self
            .client
            .history(channel, HistoryQuery { start, limit })
            .map_err(|e| to_pyerr(&e))?;
        Ok(NativeHistory {
            history: Arc::new(tokio::sync::Mutex::new(history)),
            handle: self.handle.clone(),
            dispatch: self.dispatch.clone(),
        })
    }

    fn state(&self) -> &'static str {
        state_str(self.client.subscriber().state())
    }

    /// Every counter of the client, by the names of `courier_core::ClientStats`: each an
    /// `int`, or `None` for a count the platform does not expose (`wire_bytes_*`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = serde_json::to_value(self.client.stats())
            .map_err(|e| PyRuntimeError::new_err(format!("stats: {e}")))?;
        let d = PyDict::new(py);
        if let serde_json::Value::Object(fields) = stats {
            for (name, value) in fields {
                // Every field is a count, or null when unknown (never a made-up 0).
                d.set_item(name, value.as_u64())?;
            }
        }
        Ok(d)
    }

    fn dead_letters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let letters = self.client.publisher().dead_letters();
        let mut out = Vec::with_capacity(letters.len());
        for l in letters {
            let d = PyDict::new(py);
            d.set_item("id", &l.event.id)?;
            d.set_item("channel", l.event.channel.as_str())?;
            d.set_item("event_type", &l.event.event_type)?;
            d.set_item("data", l.event.data.get())?;
            d.set_item("code", l.code())?;
            d.set_item("message", l.message())?;
            d.set_item("field", l.field())?;
            d.set_item("status", l.status())?;
            d.set_item("attempts", l.attempts)?;
            out.push(d);
        }
        PyList::new(py, out)
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        if let Some(rt) = self
            .runtime
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
    }
}

fn state_str(s: State) -> &'static str {
    match s {
        State::Disconnected => "disconnected",
        State::Connecting => "connecting",
        State::Connected => "connected",
        State::Closed => "closed",
    }
}

type SharedSub = Arc<tokio::sync::Mutex<Option<Subscription>>>;

#[pyclass(frozen, module = "courier_client._native")]
struct NativeSubscription {
    sub: SharedSub,
    cancel: tokio::sync::watch::Sender<bool>,
    handle: tokio::runtime::Handle,
    dispatch: Option<Dispatch>,
}

/// The next item, or `None` (the end) once the subscription was closed locally.
async fn next_item(
    sub: SharedSub,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> Option<SubscriptionItem> {
    let mut guard = sub.lock().await;
    if *cancel.borrow() {
        *guard = None;
    }
    let s = guard.as_mut()?;
    tokio::select! {
        item = s.next() => item,
        _ = cancel.wait_for(|c| *c) => {
            *guard = None;
            None
        }
    }
}

async fn ready(
    sub: SharedSub,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) -> Result<StreamPosition, Error> {
    let mut guard = sub.lock().await;
    let Some(s) = guard.as_mut() else {
        return Err(UsageError::Closed.into());
    };
    tokio::select! {
        r = s.ready() => r,
        _ = cancel.wait_for(|c| *c) => Err(UsageError::Closed.into()),
    }
}

#[pymethods]
impl NativeSubscription {
    /// The next item, blocking (GIL released); None when `timeout` passed.
    #[pyo3(signature = (timeout=None))]
    fn next_wait<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let fut = next_item(self.sub.clone(), self.cancel.subscribe());
        let got = block_on(py, &self.handle, fut, timeout)?;
        got.map(|item| item_tuple(py, item)).transpose()
    }

    fn next_start(&self, fut: Py<PyAny>) -> PyResult<()> {
        let work = next_item(self.sub.clone(), self.cancel.subscribe());
        spawn_outcome(self.dispatch.as_ref(), &self.handle, fut, async move {
            Outcome::Item(work.await)
        })
    }

    /// Blocks until the server confirmed the subscription; returns `(epoch, offset)`.
    #[pyo3(signature = (timeout=None))]
    fn ready_wait<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let work = ready(self.sub.clone(), self.cancel.subscribe());
        wait_outcome(
            py,
            &self.handle,
            async move { Outcome::Ready(work.await) },
            timeout,
        )
    }

    fn ready_start(&self, fut: Py<PyAny>) -> PyResult<()> {
        let work = ready(self.sub.clone(), self.cancel.subscribe());
        spawn_outcome(self.dispatch.as_ref(), &self.handle, fut, async move {
            Outcome::Ready(work.await)
        })
    }

    /// The position of the last event returned, as `(epoch, offset)`.
    fn position(&self) -> Option<(String, u64)> {
        self.sub.try_lock().ok().and_then(|s| {
            s.as_ref()
                .and_then(|s| s.position().map(|p| (p.epoch.clone(), p.offset)))
        })
    }

    /// Unsubscribes; a pending or later `next` returns the end.
    fn close(&self) {
        self.cancel.send_replace(true);
        let sub = self.sub.clone();
        self.handle.spawn(async move {
            sub.lock().await.take();
        });
    }
}

/// The pages of one history query.
#[pyclass(frozen, module = "courier_client._native")]
struct NativeHistory {
    history: Arc<tokio::sync::Mutex<History>>,
    handle: tokio::runtime::Handle,
    dispatch: Option<Dispatch>,
}

async fn next_page(
    history: Arc<tokio::sync::Mutex<History>>,
) -> Option<Result<HistoryPage, Error>> {
    history.lock().await.next_page().await
}

#[pymethods]
impl NativeHistory {
    /// The next page tuple (see `page_tuple`), blocking with the GIL released; raises the
    /// SDK's exception for a refusal, `CourierTimeoutError` when `timeout` passed.
    #[pyo3(signature = (timeout=None))]
    fn next_wait<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let work = next_page(self.history.clone());
        wait_outcome(
            py,
            &self.handle,
            async move { Outcome::Page(work.await) },
            timeout,
        )
    }

    /// Resolves the asyncio future `fut` with the next page tuple (or its exception).
    fn next_start(&self, fut: Py<PyAny>) -> PyResult<()> {
        let work = next_page(self.history.clone());
        spawn_outcome(self.dispatch.as_ref(), &self.handle, fut, async move {
            Outcome::Page(work.await)
        })
    }
}

// ------------------------------------------------------------------------------------------
// Module functions.
// ------------------------------------------------------------------------------------------

/// Recomputes a conformance vector case with the core: `evaluate(file_stem, case_json)`.
#[pyfunction]
fn evaluate_vector(file: &str, case_json: &str) -> PyResult<String> {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let case: serde_json::Value = serde_json::from_str(case_json)
        .map_err(|e| PyRuntimeError::new_err(format!("bad case: {e}")))?;
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    let out = courier_core::conformance::evaluate(file, &case, origin)
        .map_err(PyRuntimeError::new_err)?;
    Ok(out.to_string())
}

/// The vector files the core understands.
#[pyfunction]
fn vector_files() -> Vec<&'static str> {
    courier_core::conformance::VECTOR_FILES.to_vec()
}

/// The JSON Schema of every catalogue event type (the source of the Python types).
#[pyfunction]
fn catalogue_schema() -> String {
    courier_core::event::catalogue_schema().to_string()
}

/// Raises KeyboardInterrupt-free check of a channel name: `None` when valid.
#[pyfunction]
fn check_channel(channel: &str) -> PyResult<()> {
    courier_core::ChannelName::new(channel)
        .map(drop)
        .map_err(|e| to_pyerr(&Error::Invalid(e)))
}

static LOG_LEVEL: AtomicU8 = AtomicU8::new(logs::OFF);

/// Sets where Rust logs go (`sink(level, target, message)`) and the lowest level sent.
#[pyfunction]
fn set_log_sink(sink: Py<PyAny>, level: u8) {
    LOG_LEVEL.store(level, Ordering::Relaxed);
    logs::install(sink, &LOG_LEVEL);
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeClient>()?;
    m.add_class::<NativeSubscription>()?;
    m.add_class::<NativeHistory>()?;
    m.add_class::<TokenReply>()?;
    m.add_function(wrap_pyfunction!(evaluate_vector, m)?)?;
    m.add_function(wrap_pyfunction!(vector_files, m)?)?;
    m.add_function(wrap_pyfunction!(catalogue_schema, m)?)?;
    m.add_function(wrap_pyfunction!(check_channel, m)?)?;
    m.add_function(wrap_pyfunction!(set_log_sink, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

//! The HTTP publisher: one tokio task driving [`PublishQueue`] over `POST /publish/batch`.
//!
//! Everything about *what* to send and *when* (batching, priorities, idempotency ids,
//! Retry-After, the client-side GCRA, backoff, the retry budget, dead letters, token expiry)
//! is decided by the queue. The task below only sends the batches the queue hands out,
//! reports the answers, and sleeps until the queue's next deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use courier_core::queue::{
    BatchId, DeadLetter, PublishOptions, PublishQueue, PublishResult, QueueStats, Ticket,
    TransportResult,
};
use courier_core::time::{Instant, SystemTime, UNIX_EPOCH};
use courier_core::wire::PUBLISH_BATCH_PATH;
use courier_core::{ChannelName, Error, Event, Metadata, UsageError};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::token::TokenCache;

/// Called once with the final outcome of an enqueued event, on the client's runtime.
pub type Completer = Box<dyn FnOnce(Result<PublishResult, Error>) + Send + 'static>;

/// Per-event envelope options beyond the channel, type and data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventOptions {
    /// The event id (idempotency key); a fresh time-sortable id when `None`.
    pub idempotency_key: Option<String>,
    /// Metadata; `source` defaults to the client's service name and `timestamp` to now.
    pub metadata: Option<Metadata>,
}

struct State {
    queue: PublishQueue,
    waiters: HashMap<Ticket, Completer>,
    closing: bool,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the driver (a push, a close).
    wake: Notify,
    /// Wakes `flush()` callers after completions were handed out.
    progress: Notify,
    done: watch::Sender<bool>,
    source: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Publishes events over HTTP through the core's publish queue. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

pub(crate) struct PublisherSetup {
    pub(crate) http: reqwest::Client,
    pub(crate) url: String,
    pub(crate) tokens: Arc<TokenCache>,
    pub(crate) request_timeout: Duration,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Publisher {
    pub(crate) fn spawn(
        queue: PublishQueue,
        source: String,
        setup: PublisherSetup,
        handle: &tokio::runtime::Handle,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue,
                waiters: HashMap::new(),
                closing: false,
            }),
            wake: Notify::new(),
            progress: Notify::new(),
            done: watch::channel(false).0,
            source,
        });
        handle.spawn(drive(shared.clone(), setup));
        Self { shared }
    }

    /// Builds (and checks the names of) an event; nothing is queued yet.
    pub fn event(
        &self,
        channel: &str,
        event_type: &str,
        data_json: String,
        options: EventOptions,
    ) -> Result<Event, Error> {
        let channel = ChannelName::new(channel)?;
        let id = match options.idempotency_key {
            Some(k) => k,
            None => self.shared.lock().queue.next_event_id(unix_ms()),
        };
        let mut metadata = options.metadata.unwrap_or_default();
        if metadata.source.is_empty() {
            metadata.source.clone_from(&self.shared.source);
        }
        if metadata.timestamp == 0 {
            metadata.timestamp = unix_ms();
        }
        Ok(Event::from_json_data(
            id, event_type, channel, data_json, metadata,
        )?)
    }

    /// Validates and queues `event`; `on_done` gets its outcome. Fails at once, with nothing
    /// sent, when the event is invalid, the queue is full or the client is closed.
    pub fn enqueue(
        &self,
        event: Event,
        options: PublishOptions,
        on_done: Completer,
    ) -> Result<Ticket, Error> {
        let ticket = {
            let mut st = self.shared.lock();
            if st.closing {
                return Err(UsageError::Closed.into());
            }
            let ticket = st.queue.push(event, options, Instant::now())?;
            st.waiters.insert(ticket, on_done);
            ticket
        };
        self.shared.wake.notify_one();
        Ok(ticket)
    }

    /// Queues several events at once: all are validated first, and none is queued if one
    /// is invalid (the error names its index in `field`).
    pub fn enqueue_many(
        &self,
        events: Vec<(Event, PublishOptions, Completer)>,
    ) -> Result<Vec<Ticket>, Error> {
        let max = self.shared.lock().queue.config().max_payload_bytes;
        for (i, (event, _, _)) in events.iter().enumerate() {
            event
                .validate(max)
                .map_err(|e| e.within(&format!("events[{i}]")))?;
        }
        let mut tickets = Vec::with_capacity(events.len());
        {
            let mut st = self.shared.lock();
            if st.closing {
                return Err(UsageError::Closed.into());
            }
            let now = Instant::now();
            for (event, options, on_done) in events {
                let ticket = st.queue.push(event, options, now)?;
                st.waiters.insert(ticket, on_done);
                tickets.push(ticket);
            }
        }
        self.shared.wake.notify_one();
        Ok(tickets)
    }

    /// Publishes `event` and waits for its acknowledgement (or its final failure).
    ///
    /// Dropping the future (a timeout, a cancelled task) withdraws the event if it has not
    /// been sent yet; once sent it is left to finish (see [`Publisher::cancel`]).
    pub async fn publish(
        &self,
        event: Event,
        options: PublishOptions,
    ) -> Result<PublishResult, Error> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.enqueue(
            event,
            options,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        let mut withdraw = WithdrawOnDrop(Some((self, ticket)));
        let result = rx
            .await
            .unwrap_or_else(|_| Err(Error::Transport("the publisher stopped".into())));
        withdraw.0 = None;
        result
    }

    /// Withdraws an enqueued event that has not been sent yet; returns whether it was (its
    /// completer is then dropped uncalled). An event already sent is left to finish, since
    /// its first attempt may have reached the server, and its completer is still called.
    pub fn cancel(&self, ticket: Ticket) -> bool {
        let withdrawn = {
            let mut st = self.shared.lock();
            let withdrawn = st.queue.cancel(ticket);
            if withdrawn {
                st.waiters.remove(&ticket);
            }
            withdrawn
        };
        if withdrawn {
            // `flush()` may be waiting for just this event.
            self.shared.progress.notify_waiters();
        }
        withdrawn
    }

    /// Waits until every queued event is acknowledged or dead-lettered.
    pub async fn flush(&self) {
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.queue.is_flushed() && st.waiters.is_empty() {
                    return;
                }
            }
            if *self.shared.done.borrow() {
                return;
            }
            notified.await;
        }
    }

    /// Stops accepting events, sends what is queued, and waits until the driver is done.
    pub async fn close(&self) {
        {
            let mut st = self.shared.lock();
            st.closing = true;
            st.queue.close();
        }
        self.shared.wake.notify_one();
        let mut done = self.shared.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Queue counters.
    pub fn stats(&self) -> QueueStats {
        self.shared.lock().queue.stats(Instant::now())
    }

    /// The events given up, with their reasons.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.shared.lock().queue.dead_letters().to_vec()
    }

    /// Whether nothing is queued or in flight.
    pub fn is_flushed(&self) -> bool {
        self.shared.lock().queue.is_flushed()
    }
}

/// Withdraws an unsent event when the `publish` future waiting for it is dropped.
struct WithdrawOnDrop<'a>(Option<(&'a Publisher, Ticket)>);

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        if let Some((publisher, ticket)) = self.0.take() {
            publisher.cancel(ticket);
        }
    }
}

type Answer = (BatchId, String, TransportResult);

async fn drive(shared: Arc<Shared>, setup: PublisherSetup) {
    let (answer_tx, mut answer_rx) = mpsc::unbounded_channel::<Answer>();
    let (token_tx, mut token_rx) = mpsc::unbounded_channel::<Result<String, String>>();
    // The token the last 401 came back with: a refresh must replace exactly that one.
    let mut refused_token: Option<String> = None;
    loop {
        let now = Instant::now();
        let mut completions: Vec<(Option<Completer>, _)> = Vec::new();
        let mut batches = Vec::new();
        let want_token;
        // Nothing under this lock may log or call out: log sinks can take other locks
        // (Python's GIL) whose holders may be waiting for this one.
        let (deadline, finished) = {
            let mut st = shared.lock();
            st.queue.handle_timeout(now);
            want_token = st.queue.poll_token_request();
            while let Some(batch) = st.queue.poll_transmit(now) {
                batches.push(batch);
            }
            while let Some(c) = st.queue.poll_completion() {
                let waiter = st.waiters.remove(&c.ticket);
                completions.push((waiter, c.result));
            }
            let finished = st.closing && st.queue.is_flushed() && st.waiters.is_empty();
            (st.queue.poll_timeout(), finished)
        };
        if want_token {
            let tokens = setup.tokens.clone();
            let tx = token_tx.clone();
            let stale = refused_token.take();
            tracing::info!("the server said the token expired; asking the token provider");
            tokio::spawn(async move {
                let _ = tx.send(tokens.refresh(stale.as_deref()).await);
            });
        }
        for batch in batches {
            tracing::debug!(batch = batch.id.0, events = batch.count, "sending batch");
            let tx = answer_tx.clone();
            let http = setup.http.clone();
            let url = setup.url.clone();
            let tokens = setup.tokens.clone();
            let timeout = setup.request_timeout;
            tokio::spawn(async move {
                let (token, result) = send(&http, &url, &tokens, batch.body, timeout).await;
                let _ = tx.send((batch.id, token, result));
            });
        }
        let progressed = !completions.is_empty();
        for (waiter, result) in completions {
            if let Err(e) = &result {
                tracing::warn!(error = %e, "event given up");
            }
            if let Some(w) = waiter {
                w(result);
            }
        }
        if progressed {
            shared.progress.notify_waiters();
        }
        if finished {
            break;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.wake.notified() => {}
            Some((id, token, result)) = answer_rx.recv() => {
                if let TransportResult::Http { status, .. } = &result {
                    tracing::debug!(batch = id.0, status, "batch answered");
                    if *status == 401 {
                        refused_token = Some(token);
                    }
                } else if let TransportResult::Failed(e) = &result {
                    tracing::info!(batch = id.0, error = %e, "batch request failed; the queue retries it");
                }
                let mut st = shared.lock();
                st.queue.handle_response(id, result, Instant::now(), SystemTime::now());
                // Several answers may be waiting: take them under the same lock.
                while let Ok((id, token, result)) = answer_rx.try_recv() {
                    if matches!(&result, TransportResult::Http { status: 401, .. }) {
                        refused_token = Some(token);
                    }
                    st.queue.handle_response(id, result, Instant::now(), SystemTime::now());
                }
            }
            Some(result) = token_rx.recv() => {
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "token provider failed");
                }
                shared.lock().queue.handle_token(result.map(|_| ()), Instant::now());
            }
            () = sleep => {}
        }
    }
    shared.done.send_replace(true);
    shared.progress.notify_waiters();
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    tokens: &TokenCache,
    body: String,
    timeout: Duration,
) -> (String, TransportResult) {
    let token = match tokens.get().await {
        Ok(t) => t,
        Err(e) => {
            return (
                String::new(),
                TransportResult::Failed(format!("token provider failed: {e}")),
            );
        }
    };
    let response = http
        .post(url)
        .bearer_auth(&token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    let result = match response {
        Err(e) => TransportResult::Failed(error_chain(&e)),
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = r
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            match r.text().await {
                Ok(body) => TransportResult::Http {
                    status,
                    headers,
                    body,
                },
                Err(e) => TransportResult::Failed(error_chain(&e)),
            }
        }
    };
    (token, result)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

pub(crate) fn batch_url(base: &str) -> String {
    format!("{}{PUBLISH_BATCH_PATH}", base.trim_end_matches('/'))
}

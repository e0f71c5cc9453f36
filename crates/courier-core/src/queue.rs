//! The publish queue: priorities, batching, idempotent retries, rate limits and dead letters.
//!
//! [`PublishQueue`] is a sans-IO state machine. It decides what to send and when; a driver
//! (tokio + reqwest natively, `fetch` in the browser) only moves bytes and time:
//!
//! 1. [`PublishQueue::push`] events as the application publishes them; keep the [`Ticket`].
//! 2. Drain [`PublishQueue::poll_transmit`] until `None`: each [`OutgoingBatch`] is one
//!    `POST /publish/batch` ([`PUBLISH_BATCH_PATH`]) with `body` as its JSON. Send them
//!    concurrently; at most `max_in_flight` are handed out at a time.
//! 3. Report every answer (or failure, including the driver's own request timeout) with
//!    [`PublishQueue::handle_response`], exactly once per batch.
//! 4. Drain [`PublishQueue::poll_completion`] to resolve the application's futures.
//! 5. Sleep until [`PublishQueue::poll_timeout`] (or until a push or a response arrives),
//!    call [`PublishQueue::handle_timeout`], and go to 2. Extra calls are harmless.
//!
//! # What the queue decides
//!
//! - **Order.** High before normal before low; first in, first out within a priority
//!   (a retried event goes back to its original place). A batch is filled in that order,
//!   so it may carry several priorities, and high-priority events never wait behind
//!   low-priority ones. The one exception: when retries are waiting for the
//!   [retry budget](crate::retry_budget), first attempts (which need no token) may go
//!   ahead of them.
//! - **Batching.** At most `max_batch_events` events and `max_batch_bytes` of JSON per
//!   request. With no batch in flight, an event goes at once: waiting would buy nothing.
//!   While one is in flight, a batch that is not full waits up to `linger_ms` after its
//!   oldest event was pushed for company; a full one (or anything after
//!   [`close`](PublishQueue::close)) goes at once. `max_in_flight` still applies.
//! - **Idempotency.** Every event keeps its id across retries; the server acknowledges a
//!   repeated id as `duplicate` instead of delivering it twice.
//! - **Retries.** Transport failures, unreadable answers, 408, 429 and 5xx, and per-event
//!   results with a retryable code ([`ErrorCode::is_retryable`]: `RATE_LIMIT_EXCEEDED`,
//!   `UNAVAILABLE`, `SHUTTING_DOWN`, `INTERNAL`, `SLOW_CONSUMER`) are retried, up to
//!   `max_attempts` sends in all. Other refusals (400, 401, 403, 413, other 4xx, per-event
//!   `INVALID_EVENT`, `FORBIDDEN_CHANNEL`, …) are final. An event published with
//!   `retry: false` is never sent twice: any failure is final for it. Final failures
//!   complete with the error and go to the [dead letters](PublishQueue::dead_letters).
//! - **Backoff.** After a retryable failure the *whole queue* waits
//!   [`Backoff::next_delay`] before sending again (a struggling server gets no new
//!   traffic either, and order within a priority is kept). Batches that were already in
//!   flight when the backoff grew and fail too do not grow it again. A success resets it.
//! - **Retry budget.** A request that carries retried events costs one token of the
//!   [`RetryBudget`]; successful requests deposit. With no token, retries wait for the
//!   budget to refill; they are delayed, never dropped. (Only a budget configured never to
//!   refill with time, `refill_per_sec: 0` or `capacity < 1`, can run dry for good: when
//!   nothing is left that could earn a token, the waiting retries fail with their last
//!   error instead of waiting forever, and `budget_exhausted` counts them.)
//! - **Server limits.** Every response's headers (`Retry-After`, `X-RateLimit-*`,
//!   `RateLimit`, `RateLimit-Policy`) and every `retry_after_ms` in a body feed the
//!   [`BucketLimiter`]: one GCRA per bucket the server names, charged per event, so an
//!   event waits only while one of *its* buckets (its type's and `user`) is exhausted,
//!   and only until that bucket refills. Held events stay in place (first in, first out
//!   within a bucket and priority); events of other buckets go ahead of them. A per-event
//!   `RATE_LIMIT_EXCEEDED` holds the bucket it names until its `retry_after_ms`; a
//!   whole-request `Retry-After` (or a body's `retry_after_ms`) holds everything. Delays
//!   are capped at `retry_after_cap_ms`. The [`limits`](crate::limits) module documents
//!   the algorithm. Planning the next send costs O(buckets), however many events are
//!   held.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backoff::{Backoff, BackoffConfig};
use crate::error::{Error, ErrorCode, UsageError, ValidationError, ValidationKind};
use crate::event::{DEFAULT_MAX_PAYLOAD_BYTES, Event, EventIdGenerator};
use crate::limits::{BucketLimiter, Route};
use crate::rate_limit::{parse_bucket_headers, parse_rate_limit_headers};
use crate::retry_budget::{RetryBudget, RetryBudgetConfig};
use crate::time::{Duration, Instant, SystemTime, as_millis_u64};
use crate::vec_map::VecMap;
use crate::wire::{
    BATCH_BODY_OVERHEAD as BODY_OVERHEAD, batch_body, read_results, refusal_from_error_status,
};
// The HTTP wire types live in `wire`; named here too, for code written against these paths.
pub use crate::wire::{
    BatchItemResult, BatchRequest, BatchResponseBody, ErrorBody, ErrorResponse, ItemStatus,
    PUBLISH_BATCH_PATH,
};

/// Default bound on the JSON body of one batch request, in bytes (1 MB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1_000_000;

// ---------------------------------------------------------------------------------------
// Options, configuration, outputs.
// ---------------------------------------------------------------------------------------

/// How urgently an event should be sent (wire form `"high"`, `"normal"`, `"low"`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Sent before anything else queued.
    High,
    /// The default.
    #[default]
    Normal,
    /// Sent when nothing more urgent is queued.
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// The wire spelling: `high`, `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ValidationError;

    /// Parses `high`, `normal` or `low` (ASCII case ignored, surrounding spaces trimmed).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Priority::ALL
            .into_iter()
            .find(|p| t.eq_ignore_ascii_case(p.as_str()))
            .ok_or_else(|| {
                ValidationError::new(
                    "priority",
                    ValidationKind::BadFormat,
                    format!("unknown priority `{s}`; expected `high`, `normal` or `low`"),
                )
            })
    }
}

/// Per-event publishing options; `{}` gives the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PublishOptions {
    /// How urgently to send it (default normal).
    pub priority: Priority,
    /// Whether the queue may send it again after a retryable failure (default `true`).
    /// `false` for events that must never be sent twice, such as a payment: any failure
    /// is final and the event goes to the dead letters.
    pub retry: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            priority: Priority::Normal,
            retry: true,
        }
    }
}

impl PublishOptions {
    /// The defaults with another priority.
    pub fn with_priority(priority: Priority) -> Self {
        Self {
            priority,
            ..Self::default()
        }
    }
}

/// Settings of a [`PublishQueue`]; every field has a default, so `{}` is valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Most events held at once, queued or in flight (default 10 000).
    pub max_queued: usize,
    /// Most events per batch request (default 100; 0 counts as 1).
    pub max_batch_events: usize,
    /// Most bytes of JSON body per batch request (default 1 000 000). A single event
    /// larger than this is refused by [`PublishQueue::push`].
    pub max_batch_bytes: usize,
    /// How long a batch that is not full waits for company after its oldest event was
    /// pushed, in milliseconds, while another batch is in flight (default 2; 0 sends at
    /// once). With nothing in flight an event is sent at once.
    pub linger_ms: u64,
    /// Most batch requests outstanding at once (default 4; 0 counts as 1).
    pub max_in_flight: usize,
    /// Most sends of one event, first attempt included (default 8; 0 counts as 1).
    pub max_attempts: u32,
    /// Delays between retries.
    pub backoff: BackoffConfig,
    /// The token bucket that bounds retries.
    pub retry_budget: RetryBudgetConfig,
    /// Upper bound on any server-requested delay, in milliseconds (default 300 000).
    pub retry_after_cap_ms: u64,
    /// Largest `data` accepted by [`PublishQueue::push`], in bytes (default 100 KB, the
    /// server's default limit).
    pub max_payload_bytes: usize,
    /// How many dead letters are kept until taken; the oldest are dropped beyond this
    /// (they were still reported through [`PublishQueue::poll_completion`]). Default 10 000.
    pub max_dead_letters: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queued: 10_000,
            max_batch_events: 100,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            linger_ms: 2,
            max_in_flight: 4,
            max_attempts: 8,
            backoff: BackoffConfig::default(),
            retry_budget: RetryBudgetConfig::default(),
            retry_after_cap_ms: 300_000,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_dead_letters: 10_000,
        }
    }
}

/// Identifies one pushed event, from 1 up; never reused by a queue.
pub type Ticket = u64;

/// Identifies one batch request handed out by [`PublishQueue::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BatchId(pub u64);

/// A request to send: `POST` [`PUBLISH_BATCH_PATH`] with `Content-Type: application/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a batch must be sent and its answer reported with handle_response"]
pub struct OutgoingBatch {
    /// Pass it back to [`PublishQueue::handle_response`].
    pub id: BatchId,
    /// The JSON of a [`BatchRequest`].
    pub body: String,
    /// How many events it carries.
    pub count: usize,
}

/// What came back for a batch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportResult {
    /// The server answered (any status).
    Http {
        /// The HTTP status.
        status: u16,
        /// The response headers, names in any case.
        headers: Vec<(String, String)>,
        /// The response body as text.
        body: String,
    },
    /// No answer: connection refused or reset, DNS, TLS, the driver's timeout. The server
    /// may or may not have processed the request; retrying is safe thanks to the event ids.
    Failed(String),
}

/// The acknowledgement of one published event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PublishResult {
    /// The event's id.
    pub id: String,
    /// The channel it was published to.
    pub channel: String,
    /// The channel's history epoch.
    pub epoch: String,
    /// Its offset in the channel's history.
    pub offset: u64,
    /// Whether the server had already accepted this id (a retry whose first answer was
    /// lost, or the same id published twice).
    pub duplicate: bool,
    /// How many times it was sent.
    pub attempts: u32,
}

/// The final outcome of one pushed event; each ticket completes exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The ticket [`PublishQueue::push`] returned.
    pub ticket: Ticket,
    /// The acknowledgement, or why the event was given up (it is then a dead letter too).
    pub result: Result<PublishResult, Error>,
}

/// An event the queue gave up on, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The ticket [`PublishQueue::push`] returned.
    pub ticket: Ticket,
    /// The event, exactly as it was sent.
    pub event: Event,
    /// Why it was given up: a [`Refusal`] (with its HTTP status) or the last
    /// transport error.
    pub reason: Error,
    /// How many times it was sent.
    pub attempts: u32,
}

impl DeadLetter {
    /// The reason's code, e.g. `INVALID_EVENT`, `RATE_LIMIT_EXCEEDED`, `TRANSPORT`.
    pub fn code(&self) -> &'static str {
        self.reason.code()
    }

    /// The reason's message, without the code.
    pub fn message(&self) -> String {
        match &self.reason {
            Error::Refused(r) => r.message.clone(),
            Error::Transport(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// The field at fault, for validation refusals.
    pub fn field(&self) -> Option<&str> {
        match &self.reason {
            Error::Refused(r) => r.field.as_deref(),
            Error::Invalid(e) => Some(&e.field),
            _ => None,
        }
    }

    /// The HTTP status of the refusal, if it was one (for a per-event result, the status
    /// its code maps to: [`ErrorCode::http_status`]).
    pub fn status(&self) -> Option<u16> {
        match &self.reason {
            Error::Refused(r) => r.status,
            _ => None,
        }
    }
}

/// Counters and gauges of a [`PublishQueue`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct QueueStats {
    /// High-priority events waiting to be sent (first attempts and retries).
    pub queued_high: usize,
    /// Normal-priority events waiting to be sent.
    pub queued_normal: usize,
    /// Low-priority events waiting to be sent.
    pub queued_low: usize,
    /// Events in batches awaiting an answer.
    pub in_flight: usize,
    /// Batches awaiting an answer.
    pub in_flight_batches: usize,
    /// Queued events that failed before and wait to be sent again.
    pub retrying: usize,
    /// Events acknowledged (accepted or duplicate), in all.
    pub acknowledged: u64,
    /// Events given up (dead letters), in all.
    pub dead: u64,
    /// Times sending was held back by a server-announced limit (Retry-After, a learned
    /// bucket, an exhausted window), counted once per hold.
    pub rate_limit_waits: u64,
    /// Events sent again after a retryable failure, in all.
    pub retries: u64,
    /// Times retries had to wait for the retry budget, plus retries given up because it
    /// could never refill.
    pub budget_exhausted: u64,
    /// Tokens left in the retry budget.
    pub retry_tokens: f64,
}

// ---------------------------------------------------------------------------------------
// The queue.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Entry {
    ticket: Ticket,
    event: Event,
    /// The event's JSON, as it goes into every body.
    json: String,
    options: PublishOptions,
    /// Sends so far.
    attempts: u32,
    pushed_at: Instant,
    /// Why the last send failed (for a retry).
    last_error: Option<Error>,
    /// The limiter's bucket for its type, as of `PublishQueue::routes_gen`.
    route: Route,
}

#[derive(Debug)]
struct InFlight {
    entries: Vec<Entry>,
    sent_at: Instant,
    /// Whether its events were charged to a named table (false: sent before the server
    /// named its buckets, so no named bucket counted them).
    charged_named: bool,
}

/// What the next batch may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// Retries and first attempts, in priority order (costs a budget token).
    WithRetries,
    /// First attempts only.
    FreshOnly,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    at: Instant,
    pick: Pick,
    /// When the first event held by the limiter is admitted, if one is held.
    held: Option<Instant>,
}

/// Queued events of one kind by route: `(route, events, bytes of JSON with separators)`,
/// so planning costs O(routes), not O(events), however many events a bucket holds back.
#[derive(Debug, Default)]
struct RouteTally(Vec<(Route, usize, usize)>);

impl RouteTally {
    fn add(&mut self, route: Route, bytes: usize) {
        match self.0.iter_mut().find(|(r, ..)| *r == route) {
            Some((_, n, b)) => {
                *n += 1;
                *b += bytes;
            }
            None => self.0.push((route, 1, bytes)),
        }
    }

    fn remove(&mut self, route: Route, bytes: usize) {
        if let Some(i) = self.0.iter().position(|(r, ..)| *r == route) {
            let (_, n, b) = &mut self.0[i];
            *n -= 1;
            *b -= bytes;
            if *n == 0 {
                self.0.swap_remove(i);
            }
        }
    }

    fn count(&self) -> usize {
        self.0.iter().map(|(_, n, _)| n).sum()
    }
}

/// What the limiter allows one kind of queued events (first attempts or retries).
#[derive(Debug, Default)]
struct Survey {
    /// When the first of them is admitted (`now` if one is now).
    admit: Option<Instant>,
    /// How many are admitted now, their bytes (with separators); the oldest push of all.
    ready_count: usize,
    ready_bytes: usize,
    ready_oldest: Option<Instant>,
    /// When the first of those held is admitted.
    held_until: Option<Instant>,
}

/// Where the publisher's token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    /// Sends go out with the current token.
    Valid,
    /// The server said the token expired; the driver has not been asked yet.
    Wanted,
    /// The driver is getting a new token.
    Requested,
}

/// The publish queue (see the module docs).
#[derive(Debug)]
pub struct PublishQueue {
    config: QueueConfig,
    ids: EventIdGenerator,
    backoff: Backoff,
    budget: RetryBudget,
    limits: BucketLimiter,
    /// The limiter generation the queued entries' routes were computed for.
    routes_gen: u64,
    /// First attempts, by priority, in push order.
    fresh: [VecMap<Ticket, Entry>; 3],
    /// Events waiting to be sent again, by priority, in push order.
    retries: [VecMap<Ticket, Entry>; 3],
    /// Sum over `fresh` of `json.len() + 1`.
    fresh_bytes: usize,
    /// `fresh` and `retries` by route.
    fresh_routes: RouteTally,
    retry_routes: RouteTally,
    in_flight: VecMap<BatchId, InFlight>,
    in_flight_events: usize,
    next_ticket: Ticket,
    next_batch: u64,
    /// Nothing is sent before this (the backoff after a failure).
    backoff_until: Option<Instant>,
    /// When the backoff last grew; failures of batches sent before it do not grow it again.
    backoff_grown_at: Option<Instant>,
    /// The end of the last server-limit hold already counted in `rate_limit_waits`.
    limit_hold_counted: Option<Instant>,
    /// The end of the last budget hold already counted in `budget_exhausted`.
    budget_hold_counted: Option<Instant>,
    completions: VecDeque<Completion>,
    dead_letters: Vec<DeadLetter>,
    closed: bool,
    /// Where the publisher's token stands (a 401 TOKEN_EXPIRED holds every send).
    token: TokenState,
    /// The latest `now` seen, for [`PublishQueue::poll_timeout`].
    last_now: Instant,
    acknowledged: u64,
    dead: u64,
    rate_limit_waits: u64,
    retried: u64,
    budget_exhausted: u64,
}

impl PublishQueue {
    /// An empty queue. `seed` seeds the event ids and the backoff jitter (drivers pass a
    /// random one; tests a fixed one).
    pub fn new(config: QueueConfig, seed: u64, now: Instant) -> Self {
        Self {
            ids: EventIdGenerator::new(seed),
            backoff: Backoff::new(
                config.backoff.clone(),
                seed.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15,
            ),
            budget: RetryBudget::new(config.retry_budget, now),
            limits: BucketLimiter::new(),
            routes_gen: 0,
            config,
            fresh: Default::default(),
            retries: Default::default(),
            fresh_bytes: 0,
            fresh_routes: RouteTally::default(),
            retry_routes: RouteTally::default(),
            in_flight: VecMap::new(),
            in_flight_events: 0,
            next_ticket: 1,
            next_batch: 1,
            backoff_until: None,
            backoff_grown_at: None,
            limit_hold_counted: None,
            budget_hold_counted: None,
            completions: VecDeque::new(),
            dead_letters: Vec::new(),
            token: TokenState::Valid,
            closed: false,
            last_now: now,
            acknowledged: 0,
            dead: 0,
            rate_limit_waits: 0,
            retried: 0,
            budget_exhausted: 0,
        }
    }

    /// A fresh event id (26 characters, sorting by time) for an event created at `unix_ms`.
    pub fn next_event_id(&mut self, unix_ms: u64) -> String {
        self.ids.next_id(unix_ms)
    }

    /// Validates and queues an event; its outcome arrives later as a [`Completion`] with
    /// the returned ticket.
    ///
    /// Errors, with nothing queued: [`UsageError::Closed`] after [`close`](Self::close);
    /// [`Error::Invalid`] when the event fails validation (its id must be set: see
    /// [`next_event_id`](Self::next_event_id)); [`UsageError::QueueFull`] when
    /// `max_queued` events are already held.
    pub fn push(
        &mut self,
        event: Event,
        options: PublishOptions,
        now: Instant,
    ) -> Result<Ticket, Error> {
        self.observe(now);
        if self.closed {
            return Err(UsageError::Closed.into());
        }
        event.validate(self.config.max_payload_bytes)?;
        let json = event.to_json();
        if json.len() + BODY_OVERHEAD > self.config.max_batch_bytes {
            return Err(ValidationError::new(
                "data",
                ValidationKind::TooLarge,
                format!(
                    "the event is {} bytes of JSON, over the {}-byte batch limit; send a reference instead of the payload",
                    json.len(),
                    self.config.max_batch_bytes
                ),
            )
            .into());
        }
        if self.pending() >= self.config.max_queued {
            return Err(UsageError::QueueFull {
                capacity: self.config.max_queued,
            }
            .into());
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.fresh_bytes += json.len() + 1;
        let route = self.limits.route(&event.event_type);
        self.fresh_routes.add(route, json.len() + 1);
        let entry = Entry {
            ticket,
            event,
            json,
            options,
            attempts: 0,
            pushed_at: now,
            last_error: None,
            route,
        };
        self.fresh[options.priority.index()].insert(ticket, entry);
        Ok(ticket)
    }

    /// Withdraws an event that has never been sent; returns whether it was withdrawn (no
    /// completion comes for it then). An event already sent at least once is left to finish
    /// and still completes: its first attempt may have reached the server, and retrying it
    /// with the same id is what keeps that safe.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        for fresh in &mut self.fresh {
            if let Some(entry) = fresh.remove(&ticket) {
                self.fresh_bytes -= entry.json.len() + 1;
                self.fresh_routes.remove(entry.route, entry.json.len() + 1);
                return true;
            }
        }
        false
    }

    /// The next batch to send, if one may go at `now`; call until `None`.
    ///
    /// Never hands out a batch before a server-announced delay or the backoff allow it,
    /// nor more than `max_in_flight` at a time; an event goes only when its buckets admit
    /// it (each event is charged to them as it is put in the batch).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<OutgoingBatch> {
        self.observe(now);
        self.expire_unfundable_retries();
        let plan = self.plan(now)?;
        self.note_holds(now, plan.held);
        if plan.at > now {
            return None;
        }
        let entries = self.take_batch(plan.pick, now);
        if entries.is_empty() {
            return None;
        }
        let resent = entries.iter().filter(|e| e.attempts > 0).count();
        if resent > 0 {
            let withdrawn = self.budget.try_withdraw(now);
            debug_assert!(withdrawn, "the plan checked the budget");
            self.retried += resent as u64;
        }
        let body = batch_body(entries.iter().map(|e| e.json.as_str()));

        let mut entries = entries;
        for e in &mut entries {
            e.attempts = e.attempts.saturating_add(1);
        }
        let id = BatchId(self.next_batch);
        self.next_batch += 1;
        let count = entries.len();
        self.in_flight_events += count;
        self.in_flight.insert(
            id,
            InFlight {
                entries,
                sent_at: now,
                charged_named: self.limits.is_named(),
            },
        );
        Some(OutgoingBatch { id, body, count })
    }

    /// Reports what came back for a batch handed out by
    /// [`poll_transmit`](Self::poll_transmit). Unknown or already reported batches are
    /// ignored. `wall_now` turns HTTP-dates in `Retry-After` into delays.
    pub fn handle_response(
        &mut self,
        batch: BatchId,
        response: TransportResult,
        now: Instant,
        wall_now: SystemTime,
    ) {
        self.observe(now);
        let Some(flight) = self.in_flight.remove(&batch) else {
            return;
        };
        self.in_flight_events -= flight.entries.len();
        let cap = Duration::from_millis(self.config.retry_after_cap_ms);
        match response {
            TransportResult::Failed(message) => {
                self.fail_batch(flight, &Error::Transport(message), now);
            }
            TransportResult::Http {
                status,
                headers,
                body,
            } => {
                let pairs = || headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
                let info = parse_rate_limit_headers(pairs(), wall_now, cap);
                let named = parse_bucket_headers(pairs(), wall_now, cap);
                self.limits.learn_policies(&named, &info, now);
                self.reroute();
                if let Some(d) = info.retry_after {
                    self.block_for(now, d);
                }
                if (200..300).contains(&status) {
                    match read_results(&body, flight.entries.iter().map(|e| e.event.id.as_str())) {
                        Ok(results) => self.settle(flight, results, now),
                        Err(detail) => self.fail_batch(flight, &Error::Transport(detail), now),
                    }
                } else if (400..600).contains(&status) {
                    let mut refusal = refusal_from_error_status(status, &body);
                    let body_delay = refusal.retry_after.map(|d| d.min(cap));
                    if let Some(d) = body_delay {
                        self.block_for(now, d);
                    }
                    refusal.retry_after = info.retry_after.max(body_delay);
                    if status == 401 && refusal.code == ErrorCode::TokenExpired {
                        // Refused before any processing: safe to send again, even events
                        // marked not to be retried, once the driver has a new token.
                        self.await_token(flight, Error::Refused(refusal));
                    } else if matches!(status, 408 | 429) || status >= 500 {
                        self.fail_batch(flight, &Error::Refused(refusal), now);
                    } else {
                        let reason = Error::Refused(refusal);
                        for entry in flight.entries {
                            self.kill(entry, reason.clone());
                        }
                    }
                } else {
                    let reason = Error::Transport(format!(
                        "unexpected HTTP status {status} from {PUBLISH_BATCH_PATH}"
                    ));
                    self.fail_batch(flight, &reason, now);
                }
                // After the refunds of `settle`: `r` is the server's state after the batch.
                self.limits.sync(&named, now, self.in_flight.is_empty());
            }
        }
        self.expire_unfundable_retries();
    }

    /// Lets the queue act on time passing. Sending itself happens in
    /// [`poll_transmit`](Self::poll_transmit); extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        self.expire_unfundable_retries();
    }

    /// When [`poll_transmit`](Self::poll_transmit) will next have a batch to hand out
    /// (a lingering batch filling up, a backoff or rate-limit delay ending, the retry
    /// budget refilling), as of the latest `now` the queue was given. `None` when nothing
    /// is queued, or when `max_in_flight` batches are out and only a response can help.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.plan(self.last_now).map(|p| p.at)
    }

    /// When the next batch may be sent, as seen at `now` (`now` itself if one may go
    /// now); `None` as for [`poll_timeout`](Self::poll_timeout).
    pub fn next_send_at(&self, now: Instant) -> Option<Instant> {
        self.plan(now).map(|p| p.at)
    }

    /// The next final outcome of a pushed event, in the order they were decided.
    #[must_use]
    pub fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    /// True when every accepted event was acknowledged or given up (completions may still
    /// wait in [`poll_completion`](Self::poll_completion)).
    pub fn is_flushed(&self) -> bool {
        self.pending() == 0
    }

    /// Events held, queued or in flight (what `max_queued` bounds).
    pub fn pending(&self) -> usize {
        self.queued_count() + self.in_flight_events
    }

    /// Counters and gauges at `now`.
    pub fn stats(&self, now: Instant) -> QueueStats {
        let queued = |p: usize| self.fresh[p].len() + self.retries[p].len();
        QueueStats {
            queued_high: queued(0),
            queued_normal: queued(1),
            queued_low: queued(2),
            in_flight: self.in_flight_events,
            in_flight_batches: self.in_flight.len(),
            retrying: self.retry_count(),
            acknowledged: self.acknowledged,
            dead: self.dead,
            rate_limit_waits: self.rate_limit_waits,
            retries: self.retried,
            budget_exhausted: self.budget_exhausted,
            retry_tokens: self.budget.available(now),
        }
    }

    /// The events given up so far (oldest first, at most `max_dead_letters`).
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// Takes the dead letters, leaving none.
    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead_letters)
    }

    /// Stops accepting events; what is queued still drains, without lingering.
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// True once after the server answered 401 `TOKEN_EXPIRED`: the driver asks its token
    /// provider (one request at a time) and answers with
    /// [`handle_token`](Self::handle_token). Nothing is sent meanwhile.
    #[must_use]
    pub fn poll_token_request(&mut self) -> bool {
        if self.token == TokenState::Wanted {
            self.token = TokenState::Requested;
            return true;
        }
        false
    }

    /// The token provider's answer after [`poll_token_request`](Self::poll_token_request):
    /// `Ok` resumes sending with the new token; `Err` resumes after a backoff delay, so a
    /// provider that keeps failing ends in dead letters after `max_attempts`, never a hang.
    pub fn handle_token(&mut self, result: Result<(), String>, now: Instant) {
        self.observe(now);
        if self.token == TokenState::Valid {
            return;
        }
        self.token = TokenState::Valid;
        if result.is_err() {
            self.grow_backoff(now, now);
        }
    }

    /// True after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The configuration in force.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    // --- internals -----------------------------------------------------------------------

    fn observe(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    fn retry_count(&self) -> usize {
        self.retries.iter().map(VecMap::len).sum()
    }

    fn fresh_count(&self) -> usize {
        self.fresh.iter().map(VecMap::len).sum()
    }

    fn queued_count(&self) -> usize {
        self.retry_count() + self.fresh_count()
    }

    fn max_batch_events(&self) -> usize {
        self.config.max_batch_events.max(1)
    }

    /// The earliest time anything may be sent: after the backoff and a whole-request
    /// Retry-After (the buckets of each event are checked by [`Self::survey`]).
    fn gate(&self, now: Instant) -> Option<Instant> {
        if self.token != TokenState::Valid {
            return None;
        }
        let mut gate = now;
        if let Some(b) = self.backoff_until {
            gate = gate.max(b);
        }
        if let Some(b) = self.limits.blocked_until(now) {
            gate = gate.max(b);
        }
        Some(gate)
    }

    /// Recomputes the queued events' routes after the limiter's table changed names.
    fn reroute(&mut self) {
        let generation = self.limits.generation();
        if self.routes_gen == generation {
            return;
        }
        self.routes_gen = generation;
        let limits = &self.limits;
        for (maps, tally) in [
            (&mut self.fresh, &mut self.fresh_routes),
            (&mut self.retries, &mut self.retry_routes),
        ] {
            *tally = RouteTally::default();
            for e in maps.iter_mut().flat_map(VecMap::values_mut) {
                e.route = limits.route(&e.event.event_type);
                tally.add(e.route, e.json.len() + 1);
            }
        }
    }

    /// What the limiter allows the queued events of one kind (first attempts or retries)
    /// at `now`, route by route: O(routes), whatever the number of events. `bytes` is their
    /// JSON with separators. The linger is measured from the oldest of them, held or not
    /// (a held event has waited longer than any linger already).
    fn survey(
        &self,
        maps: &[VecMap<Ticket, Entry>; 3],
        tally: &RouteTally,
        bytes: usize,
        now: Instant,
    ) -> Survey {
        debug_assert_eq!(tally.count(), maps.iter().map(VecMap::len).sum::<usize>());
        let oldest = maps
            .iter()
            .filter_map(|m| m.first_key_value())
            .map(|(_, e)| e.pushed_at)
            .min();
        let mut s = Survey {
            ready_oldest: oldest,
            ..Survey::default()
        };
        if oldest.is_none() {
            return s;
        }
        if self.limits.admits_all(now) {
            s.admit = Some(now);
            s.ready_count = tally.count();
            s.ready_bytes = bytes;
            return s;
        }
        for &(route, count, route_bytes) in &tally.0 {
            let Some(at) = self.limits.admit_at(route, now) else {
                continue;
            };
            s.admit = Some(s.admit.map_or(at, |a: Instant| a.min(at)));
            if at <= now {
                s.ready_count += count;
                s.ready_bytes += route_bytes;
            } else {
                s.held_until = Some(s.held_until.map_or(at, |h: Instant| h.min(at)));
            }
        }
        s
    }

    /// When the retry budget will hold a token; `None` if time alone never refills it.
    fn token_at(&self, now: Instant) -> Option<Instant> {
        let available = self.budget.available(now);
        if available >= 1.0 {
            return Some(now);
        }
        let cfg = self.budget.config();
        if !(cfg.refill_per_sec > 0.0 && cfg.capacity >= 1.0) {
            return None;
        }
        let secs = (1.0 - available) / cfg.refill_per_sec;
        let wait = Duration::try_from_secs_f64(secs).ok()?;
        // Whole milliseconds plus one, so float rounding never leaves the bucket a hair short.
        let ms = as_millis_u64(wait).saturating_add(2);
        now.checked_add(Duration::from_millis(ms))
    }

    /// When the first attempts alone make a batch worth sending: at once when nothing is
    /// in flight (lingering would buy nothing), when the batch is full or the queue closed;
    /// else `linger_ms` after the oldest admitted one was pushed. Events held by their
    /// buckets go when the first of them is admitted (they have waited already).
    fn fresh_ready_at(&self, s: &Survey, now: Instant) -> Option<Instant> {
        let admit = s.admit?;
        if admit > now {
            return Some(admit);
        }
        let full = s.ready_count >= self.max_batch_events()
            || s.ready_bytes + BODY_OVERHEAD > self.config.max_batch_bytes;
        if self.closed || full || self.config.linger_ms == 0 || self.in_flight.is_empty() {
            return Some(now);
        }
        s.ready_oldest?
            .checked_add(Duration::from_millis(self.config.linger_ms))
            .map(|t| t.max(now))
    }

    /// The next batch that can go and when; `None` when nothing can go without new input.
    fn plan(&self, now: Instant) -> Option<Plan> {
        let retrying = self.retry_count() > 0;
        let fresh = self.fresh_count() > 0;
        if !(retrying || fresh) || self.in_flight.len() >= self.config.max_in_flight.max(1) {
            return None;
        }
        let gate = self.gate(now)?;
        let fresh_s = self.survey(&self.fresh, &self.fresh_routes, self.fresh_bytes, now);
        let retry_s = self.survey(&self.retries, &self.retry_routes, 0, now);
        let held = match (fresh_s.held_until, retry_s.held_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let with_retries = if retrying {
            retry_s
                .admit
                .and_then(|a| Some(self.token_at(now)?.max(a).max(gate)))
        } else {
            None
        };
        let fresh_only = if fresh {
            self.fresh_ready_at(&fresh_s, now).map(|t| t.max(gate))
        } else {
            None
        };
        let (at, pick) = match (with_retries, fresh_only) {
            (Some(r), Some(f)) if f < r => (f, Pick::FreshOnly),
            (Some(r), _) => (r, Pick::WithRetries),
            (None, Some(f)) => (f, Pick::FreshOnly),
            (None, None) => return None,
        };
        Some(Plan { at, pick, held })
    }

    /// Counts holds by a server limit and by the retry budget, once per hold. `held` is
    /// when the first event held by the limiter at `now` is admitted.
    fn note_holds(&mut self, now: Instant, held: Option<Instant>) {
        if let Some(end) = held {
            if self.limit_hold_counted.is_none_or(|t| t <= now) {
                self.rate_limit_waits += 1;
                self.limit_hold_counted = Some(end);
            }
        }
        if self.retry_count() > 0
            && self.gate(now).is_some_and(|g| g <= now)
            && self.budget.available(now) < 1.0
            && self.budget_hold_counted.is_none_or(|t| t <= now)
        {
            self.budget_exhausted += 1;
            self.budget_hold_counted = Some(self.token_at(now).unwrap_or(now));
        }
    }

    /// Takes the next batch: by priority, then push order, skipping the events whose
    /// buckets do not admit them (they keep their place) and charging each event taken to
    /// its buckets; stops at the first admitted event that does not fit (so nothing
    /// overtakes a more urgent event but what its buckets hold).
    fn take_batch(&mut self, pick: Pick, now: Instant) -> Vec<Entry> {
        let max_events = self.max_batch_events();
        let max_bytes = self.config.max_batch_bytes;
        let mut out: Vec<Entry> = Vec::new();
        let mut bytes = BODY_OVERHEAD;
        // Routes refused at `now`: charging only tightens, so they stay refused.
        let mut refused: Vec<Route> = Vec::new();
        let mut full = false;
        for p in 0..3 {
            // (ticket, from_retries) of the events taken from this priority, in order.
            let mut chosen: Vec<(Ticket, bool)> = Vec::new();
            {
                let mut fresh = self.fresh[p].iter().peekable();
                let mut retries = match pick {
                    Pick::WithRetries => Some(self.retries[p].iter().peekable()),
                    Pick::FreshOnly => None,
                };
                loop {
                    let next_retry = retries.as_mut().and_then(|r| r.peek().map(|(t, _)| **t));
                    let next_fresh = fresh.peek().map(|(t, _)| **t);
                    let from_retries = match (next_fresh, next_retry) {
                        (None, None) => break,
                        (Some(f), Some(r)) => r < f,
                        (None, Some(_)) => true,
                        (Some(_), None) => false,
                    };
                    let next = if from_retries {
                        retries.as_mut().and_then(Iterator::next)
                    } else {
                        fresh.next()
                    };
                    let Some((&ticket, entry)) = next else { break };
                    if refused.contains(&entry.route) {
                        continue;
                    }
                    if self.limits.admit_at(entry.route, now) != Some(now) {
                        refused.push(entry.route);
                        continue;
                    }
                    let add =
                        entry.json.len() + usize::from(!(out.is_empty() && chosen.is_empty()));
                    if !(out.is_empty() && chosen.is_empty()) && bytes + add > max_bytes {
                        full = true;
                        break;
                    }
                    let charged = self.limits.try_charge(entry.route, now);
                    debug_assert!(charged, "admit_at said yes");
                    bytes += add;
                    chosen.push((ticket, from_retries));
                    if out.len() + chosen.len() >= max_events {
                        full = true;
                        break;
                    }
                }
            }
            for (ticket, from_retries) in chosen {
                let map = if from_retries {
                    &mut self.retries[p]
                } else {
                    &mut self.fresh[p]
                };
                // Usually the first (nothing held ahead of it): a pop, no search.
                let entry = match map.first_key_value() {
                    Some((first, _)) if *first == ticket => map.pop_first().map(|(_, e)| e),
                    _ => map.remove(&ticket),
                };
                if let Some(entry) = entry {
                    let bytes = entry.json.len() + 1;
                    if from_retries {
                        self.retry_routes.remove(entry.route, bytes);
                    } else {
                        self.fresh_bytes -= bytes;
                        self.fresh_routes.remove(entry.route, bytes);
                    }
                    out.push(entry);
                }
            }
            if full {
                break;
            }
        }
        out
    }

    /// Applies a 200 answer, event by event.
    fn settle(&mut self, flight: InFlight, results: Vec<BatchItemResult>, now: Instant) {
        let cap = Duration::from_millis(self.config.retry_after_cap_ms);
        let mut success = false;
        let mut retrying = false;
        // Events sent before the server named its buckets were not counted in them: those
        // the server accepted are counted now, before the sync, so the mirror is not one cell
        // per such event short (and refused ones have nothing to give back). They are counted
        // at the answer's arrival, not at the send: the server counted them somewhere in
        // between, and a first request's connection set-up puts that well after the send; the
        // later end can only make the client late by the answer's way back, never early.
        let uncounted = !flight.charged_named && self.limits.is_named();
        for (entry, item) in flight.entries.into_iter().zip(results) {
            match item.status {
                ItemStatus::Accepted | ItemStatus::Duplicate => {
                    if uncounted && item.status == ItemStatus::Accepted {
                        let route = self.limits.route(&entry.event.event_type);
                        self.limits.charge_late(route, now);
                    }
                    if item.status == ItemStatus::Duplicate && !uncounted {
                        // Answered from the idempotency check: the server charged nothing.
                        let route = self.limits.route(&entry.event.event_type);
                        self.limits.refund(route, now);
                    }
                    success = true;
                    let result = PublishResult {
                        id: entry.event.id.clone(),
                        channel: item
                            .channel
                            .unwrap_or_else(|| entry.event.channel.to_string()),
                        epoch: item.epoch.unwrap_or_default(),
                        offset: item.offset.unwrap_or(0),
                        duplicate: item.status == ItemStatus::Duplicate,
                        attempts: entry.attempts,
                    };
                    self.acknowledged += 1;
                    self.completions.push_back(Completion {
                        ticket: entry.ticket,
                        result: Ok(result),
                    });
                }
                ItemStatus::Rejected => {
                    let error = item.error.unwrap_or_else(|| {
                        ErrorBody::new(ErrorCode::Unknown, "rejected without a reason")
                    });
                    let mut refusal = error.to_refusal(Some(error.code.http_status()));
                    refusal.field = refusal.field.map(|f| event_field(&f).to_owned());
                    refusal.retry_after = refusal.retry_after.map(|d| d.min(cap));
                    let route = self.limits.route(&entry.event.event_type);
                    let limited = error.code == ErrorCode::RateLimitExceeded;
                    // A refused event costs nothing at the server (refused before the limiter,
                    // or by it: a refusal charges no bucket), so its cells come back. For a
                    // rate-limit refusal the bucket's block below then says exactly when its
                    // next cell is free; keeping the cell would add a whole interval on top.
                    if !uncounted {
                        self.limits.refund(route, now);
                    }
                    match (
                        refusal.retry_after.and_then(|d| now.checked_add(d)),
                        limited,
                    ) {
                        // Only the bucket that refused waits; the others go on (no backoff).
                        (Some(until), true) => {
                            self.limits
                                .block_bucket(error.limit_type.as_deref(), route, until);
                            self.retry_or_kill(entry, Error::Refused(refusal));
                            continue;
                        }
                        (Some(until), false) => self.limits.block_all(until),
                        (None, _) => {}
                    }
                    if error.code.is_retryable() {
                        retrying |= self.retry_or_kill(entry, Error::Refused(refusal));
                    } else {
                        self.kill(entry, Error::Refused(refusal));
                    }
                }
            }
        }
        if success {
            self.budget.deposit_success(now);
            self.backoff.reset();
        }
        if retrying {
            self.grow_backoff(flight.sent_at, now);
        }
    }

    /// A retryable failure of the whole batch.
    fn fail_batch(&mut self, flight: InFlight, reason: &Error, now: Instant) {
        let mut retrying = false;
        for entry in flight.entries {
            retrying |= self.retry_or_kill(entry, reason.clone());
        }
        if retrying {
            self.grow_backoff(flight.sent_at, now);
        }
    }

    /// The token expired: the batch waits for a new one (attempts still count, so a token
    /// the server never accepts ends in dead letters).
    fn await_token(&mut self, flight: InFlight, reason: Error) {
        if self.token == TokenState::Valid {
            self.token = TokenState::Wanted;
        }
        for mut entry in flight.entries {
            if entry.attempts >= self.config.max_attempts.max(1) {
                self.kill(entry, reason.clone());
            } else {
                entry.last_error = Some(reason.clone());
                self.requeue(entry);
            }
        }
    }

    /// Queues the event again, or gives it up if it may not be retried; true if queued.
    fn retry_or_kill(&mut self, mut entry: Entry, reason: Error) -> bool {
        if !entry.options.retry || entry.attempts >= self.config.max_attempts.max(1) {
            self.kill(entry, reason);
            return false;
        }
        entry.last_error = Some(reason);
        self.requeue(entry);
        true
    }

    /// Puts a sent event back among the retries, routed by the table in force now (it may
    /// have been learned while the event was in flight).
    fn requeue(&mut self, mut entry: Entry) {
        entry.route = self.limits.route(&entry.event.event_type);
        self.retry_routes.add(entry.route, entry.json.len() + 1);
        self.retries[entry.options.priority.index()].insert(entry.ticket, entry);
    }

    /// Gives an event up: completes it with `reason` and keeps it as a dead letter.
    fn kill(&mut self, entry: Entry, reason: Error) {
        self.dead += 1;
        self.completions.push_back(Completion {
            ticket: entry.ticket,
            result: Err(reason.clone()),
        });
        if self.config.max_dead_letters == 0 {
            return;
        }
        if self.dead_letters.len() >= self.config.max_dead_letters {
            self.dead_letters.remove(0);
        }
        self.dead_letters.push(DeadLetter {
            ticket: entry.ticket,
            event: entry.event,
            reason,
            attempts: entry.attempts,
        });
    }

    fn grow_backoff(&mut self, sent_at: Instant, now: Instant) {
        if self.backoff_grown_at.is_some_and(|grown| sent_at < grown) {
            return;
        }
        let delay = self.backoff.next_delay();
        self.backoff_grown_at = Some(now);
        if let Some(until) = now.checked_add(delay) {
            self.backoff_until = Some(self.backoff_until.map_or(until, |b| b.max(until)));
        }
    }

    /// A whole-request delay: nothing is sent before `now + delay`.
    fn block_for(&mut self, now: Instant, delay: Duration) {
        if let Some(until) = now.checked_add(delay) {
            self.limits.block_all(until);
        }
    }

    /// With a budget that never refills by time: when nothing in flight or queued could
    /// earn a token, the waiting retries fail with their last error.
    fn expire_unfundable_retries(&mut self) {
        let now = self.last_now;
        if self.retry_count() == 0
            || self.budget.available(now) >= 1.0
            || self.token_at(now).is_some()
            || !self.in_flight.is_empty()
            || self.fresh_count() > 0
        {
            return;
        }
        self.retry_routes = RouteTally::default();
        for p in 0..3 {
            for (_, mut entry) in std::mem::take(&mut self.retries[p]) {
                self.budget_exhausted += 1;
                let reason = entry
                    .last_error
                    .take()
                    .unwrap_or_else(|| Error::Transport("retry budget exhausted".into()));
                self.kill(entry, reason);
            }
        }
    }
}

/// A rejected event's field as the event's own path: the server names it within the batch
/// (`events[2].data.percent`); the caller published one event, so it gets `data.percent`,
/// as a client-side check would report it.
fn event_field(field: &str) -> &str {
    field
        .strip_prefix("events[")
        .and_then(|rest| rest.split_once("]."))
        .filter(|(i, _)| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
        .map_or(field, |(_, f)| f)
}

#[cfg(test)]
mod tests;

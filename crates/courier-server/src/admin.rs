//! The admin API (`GET /admin/api/*`, for tokens with the `admin` role); the console that
//! uses it is served by [`crate::console`].
//!
//! What it reports is this instance's view, kept in memory and bounded: the WebSocket
//! connections open here (user, role, client name, channels), the channels with the events
//! published through this instance per second, and the rate-limit decisions of the last
//! [`WINDOW_SECS`] (per-minute totals per bucket, and the individual refusals in a ring of
//! `admin.rate_limit_log` entries). Behind several instances, each reports its own share.

// As in http.rs: `ApiError` carries its headers inline and is built on the cold path only.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use courier_core::{ChannelName, ErrorCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::SharedState;
use crate::auth::{Claims, Role};
use crate::http::{ApiError, authenticate, unix_ms};
use crate::metrics::{AuthFailure, RlDecision};

/// How far back the rate-limit decisions and the channel rates reach, in seconds.
pub const WINDOW_SECS: u64 = 600;

/// Most channels whose rates are tracked; past it the one idle longest is forgotten.
const MAX_CHANNELS: usize = 10_000;

/// Per-second slots of a channel's rate: one minute.
const RATE_SLOTS: usize = 60;

/// This instance's live view for the admin API.
pub struct AdminState {
    next_id: AtomicU64,
    connections: Mutex<BTreeMap<u64, Arc<LiveConnection>>>,
    channels: Mutex<HashMap<ChannelName, ChannelRate>>,
    decisions: Mutex<Decisions>,
}

/// One open, authenticated WebSocket connection.
struct LiveConnection {
    id: u64,
    session: String,
    user: String,
    role: Role,
    client: Option<String>,
    connected_at_ms: u64,
    channels: Mutex<BTreeSet<String>>,
}

/// Keeps a connection listed while it lives; dropping it removes the entry.
pub struct ConnectionEntry {
    admin: Arc<AdminState>,
    live: Arc<LiveConnection>,
}

impl ConnectionEntry {
    /// The connection subscribed to `channel`.
    pub fn subscribed(&self, channel: &ChannelName) {
        self.live
            .channels
            .lock()
            .expect("admin lock")
            .insert(channel.to_string());
    }

    /// The connection left `channel`.
    pub fn unsubscribed(&self, channel: &ChannelName) {
        self.live
            .channels
            .lock()
            .expect("admin lock")
            .remove(channel.as_str());
    }
}

impl Drop for ConnectionEntry {
    fn drop(&mut self) {
        self.admin
            .connections
            .lock()
            .expect("admin lock")
            .remove(&self.live.id);
    }
}

/// A channel's events per second over the last minute, as a ring of per-second counts.
struct ChannelRate {
    /// `(unix second, events)` per slot; a slot whose second is stale counts nothing.
    slots: [(u64, u32); RATE_SLOTS],
    total: u64,
    last_ms: u64,
}

impl ChannelRate {
    fn new() -> Self {
        Self {
            slots: [(0, 0); RATE_SLOTS],
            total: 0,
            last_ms: 0,
        }
    }

    fn record(&mut self, now_ms: u64) {
        let sec = now_ms / 1000;
        let slot = &mut self.slots[(sec % RATE_SLOTS as u64) as usize];
        if slot.0 != sec {
            *slot = (sec, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        self.total += 1;
        self.last_ms = now_ms;
    }

    /// Events per second over the last `secs` whole seconds (the current one excluded, as
    /// it is not over yet).
    fn rate(&self, now_ms: u64, secs: u64) -> f64 {
        let now = now_ms / 1000;
        let from = now.saturating_sub(secs);
        let n: u64 = self
            .slots
            .iter()
            .filter(|(s, _)| *s >= from && *s < now)
            .map(|(_, n)| u64::from(*n))
            .sum();
        n as f64 / secs as f64
    }
}

#[derive(Default)]
struct Decisions {
    /// Per minute (Unix ms of its start) and bucket (its row, see
    /// [`crate::ratelimit::RateLimiter::bucket_names`]): allowed, blocked, shadow-blocked.
    totals: BTreeMap<(u64, usize), [u64; 3]>,
    /// The refused (and shadow-refused) events, newest last, at most `cap`.
    refusals: VecDeque<RateLimitRefusal>,
    cap: usize,
}

impl AdminState {
    /// An empty view keeping at most `rate_limit_log` refusals.
    pub fn new(rate_limit_log: usize) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            connections: Mutex::default(),
            channels: Mutex::default(),
            decisions: Mutex::new(Decisions {
                cap: rate_limit_log,
                ..Decisions::default()
            }),
        }
    }

    /// Lists an authenticated connection until the returned entry is dropped.
    pub fn connected(
        self: &Arc<Self>,
        session: &str,
        claims: &Claims,
        client: Option<&str>,
    ) -> ConnectionEntry {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let live = Arc::new(LiveConnection {
            id,
            session: session.to_owned(),
            user: claims.sub.clone(),
            role: claims.role,
            client: client.map(str::to_owned),
            connected_at_ms: unix_ms(),
            channels: Mutex::default(),
        });
        self.connections
            .lock()
            .expect("admin lock")
            .insert(id, live.clone());
        ConnectionEntry {
            admin: self.clone(),
            live,
        }
    }

    /// Counts one event accepted on `channel`.
    pub fn published(&self, channel: &ChannelName) {
        let now = unix_ms();
        let mut channels = self.channels.lock().expect("admin lock");
        // The common case allocates nothing: the channel is known.
        if let Some(rate) = channels.get_mut(channel) {
            rate.record(now);
            return;
        }
        if channels.len() >= MAX_CHANNELS {
            let idle = channels
                .iter()
                .min_by_key(|(_, r)| r.last_ms)
                .map(|(c, _)| c.clone());
            if let Some(idle) = idle {
                channels.remove(&idle);
            }
        }
        let mut rate = ChannelRate::new();
        rate.record(now);
        channels.insert(channel.clone(), rate);
    }

    /// Records what the buckets (by row) decided for one event; `bucket_name` names a row.
    /// Allocates only for a refusal, or for the first event of a minute and bucket.
    pub fn rate_limited(
        &self,
        event: &RateLimitedEvent<'_>,
        decisions: &[Option<(usize, RlDecision)>],
        bucket_name: &dyn Fn(usize) -> String,
        retry_after_ms: Option<u64>,
    ) {
        let now = unix_ms();
        let minute = now - now % 60_000;
        let mut d = self.decisions.lock().expect("admin lock");
        let oldest = now.saturating_sub(WINDOW_SECS * 1000);
        while d
            .totals
            .first_key_value()
            .is_some_and(|((m, _), _)| *m + 60_000 <= oldest)
        {
            d.totals.pop_first();
        }
        for (row, decision) in decisions.iter().flatten() {
            let counts = d.totals.entry((minute, *row)).or_default();
            counts[match decision {
                RlDecision::Allowed => 0,
                RlDecision::Blocked => 1,
                RlDecision::ShadowBlocked => 2,
            }] += 1;
        }
        for (row, decision) in decisions.iter().flatten() {
            if *decision == RlDecision::Allowed || d.cap == 0 {
                continue;
            }
            if d.refusals.len() >= d.cap {
                d.refusals.pop_front();
            }
            d.refusals.push_back(RateLimitRefusal {
                at_ms: now,
                user: event.user.to_owned(),
                tier: event.tier.to_owned(),
                channel: event.channel.to_owned(),
                event_type: event.event_type.to_owned(),
                bucket: bucket_name(*row),
                shadow: *decision == RlDecision::ShadowBlocked,
                retry_after_ms: if *decision == RlDecision::Blocked {
                    retry_after_ms
                } else {
                    None
                },
            });
        }
    }
}

/// The event whose rate-limit decisions [`AdminState::rate_limited`] records.
pub struct RateLimitedEvent<'a> {
    /// The publisher (`sub`).
    pub user: &'a str,
    /// The publisher's tier.
    pub tier: &'a str,
    /// The channel.
    pub channel: &'a str,
    /// The event type.
    pub event_type: &'a str,
}

/// Refuses every token but an `admin` one.
fn admin_claims(state: &SharedState, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let claims = authenticate(state, headers)?;
    if claims.role != Role::Admin {
        state.metrics.auth_failure(AuthFailure::Forbidden);
        let role = claims.role.as_str();
        return Err(ApiError::new(
            ErrorCode::ForbiddenChannel,
            format!(
                "the admin API needs a token with role `admin` (this one is `{role}`): mint one with `courier-server token --sub NAME --role admin`"
            ),
        ));
    }
    Ok(claims)
}

/// One open WebSocket connection.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionInfo {
    /// The session id sent in `connected`.
    pub session: String,
    /// The token's `sub`.
    pub user: String,
    /// The token's role: `user`, `service` or `admin`.
    pub role: String,
    /// The client name from `connect` (`client`), e.g. `courier-ts/0.1.0`; null when the
    /// client sent none.
    pub client: Option<String>,
    /// When it authenticated, Unix ms.
    pub connected_at_ms: u64,
    /// The channels it is subscribed to.
    pub channels: Vec<String>,
}

/// `GET /admin/api/connections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionsReport {
    /// Open connections on this instance.
    pub total: usize,
    /// Per user: how many connections.
    pub users: BTreeMap<String, usize>,
    /// Per channel: how many of these connections are subscribed.
    pub channels: BTreeMap<String, usize>,
    /// Every connection, oldest first.
    pub connections: Vec<ConnectionInfo>,
}

/// One channel.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelInfo {
    /// The channel.
    pub channel: String,
    /// Subscribers on this instance.
    pub subscribers: usize,
    /// Events per second over the last 10 s (published through this instance).
    pub rate_10s: f64,
    /// Events per second over the last 60 s.
    pub rate_60s: f64,
    /// Events published through this instance since it started (or since the channel was
    /// last forgotten: at most 10,000 channels are tracked).
    pub events: u64,
    /// The last event, Unix ms (null: none published here).
    pub last_event_ms: Option<u64>,
}

/// `GET /admin/api/channels`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelsReport {
    /// Channels with subscribers here or events published here, busiest first.
    pub channels: Vec<ChannelInfo>,
}

/// One refused (or shadow-refused) event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RateLimitRefusal {
    /// When, Unix ms.
    pub at_ms: u64,
    /// The publisher.
    pub user: String,
    /// The publisher's tier.
    pub tier: String,
    /// The channel.
    pub channel: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The bucket over its limit: `user`, `type:<prefix>` or `fallback`.
    pub bucket: String,
    /// A shadow bucket: counted, not refused.
    pub shadow: bool,
    /// The wait handed out (refused events only).
    pub retry_after_ms: Option<u64>,
}

/// One bucket's decisions in one minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitMinute {
    /// The minute's start, Unix ms.
    pub minute_ms: u64,
    /// The bucket.
    pub bucket: String,
    /// Events within the limit.
    pub allowed: u64,
    /// Events refused.
    pub blocked: u64,
    /// Events over a shadow limit (not refused).
    pub shadow_blocked: u64,
}

/// `GET /admin/api/rate-limits`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitsReport {
    /// Whether the server enforces rate limits.
    pub enabled: bool,
    /// How far back this reaches, in seconds.
    pub window_secs: u64,
    /// Most refusals kept (`admin.rate_limit_log`); older ones are dropped first.
    pub kept: usize,
    /// Per minute and bucket, oldest first.
    pub minutes: Vec<RateLimitMinute>,
    /// Individual refusals within the window, newest first.
    pub refusals: Vec<RateLimitRefusal>,
}

/// `GET /admin/api/connections`: the WebSocket connections open on this instance.
#[utoipa::path(get, path = "/admin/api/connections", tag = "admin",
    responses(
        (status = 200, description = "This instance's open connections", body = ConnectionsReport),
        (status = 401, description = "Missing, invalid or expired token", body = courier_core::ErrorResponse),
        (status = 403, description = "The token's role is not `admin`", body = courier_core::ErrorResponse),
    ),
    security(("bearer" = [])))]
pub(crate) async fn connections(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<ConnectionsReport>, ApiError> {
    admin_claims(&state, &headers)?;
    let live: Vec<Arc<LiveConnection>> = state
        .admin
        .connections
        .lock()
        .expect("admin lock")
        .values()
        .cloned()
        .collect();
    let mut users = BTreeMap::new();
    let mut channels = BTreeMap::new();
    let connections: Vec<ConnectionInfo> = live
        .iter()
        .map(|c| {
            let subscribed: Vec<String> = c
                .channels
                .lock()
                .expect("admin lock")
                .iter()
                .cloned()
                .collect();
            *users.entry(c.user.clone()).or_default() += 1;
            for ch in &subscribed {
                *channels.entry(ch.clone()).or_default() += 1;
            }
            ConnectionInfo {
                session: c.session.clone(),
                user: c.user.clone(),
                role: c.role.as_str().to_owned(),
                client: c.client.clone(),
                connected_at_ms: c.connected_at_ms,
                channels: subscribed,
            }
        })
        .collect();
    Ok(Json(ConnectionsReport {
        total: connections.len(),
        users,
        channels,
        connections,
    }))
}

/// `GET /admin/api/channels`: channels with their event rates.
#[utoipa::path(get, path = "/admin/api/channels", tag = "admin",
    responses(
        (status = 200, description = "Channels subscribed or published to on this instance, busiest first", body = ChannelsReport),
        (status = 401, description = "Missing, invalid or expired token", body = courier_core::ErrorResponse),
        (status = 403, description = "The token's role is not `admin`", body = courier_core::ErrorResponse),
    ),
    security(("bearer" = [])))]
pub(crate) async fn channels(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<ChannelsReport>, ApiError> {
    admin_claims(&state, &headers)?;
    let now = unix_ms();
    let mut report: HashMap<String, ChannelInfo> = HashMap::new();
    {
        let channels = state.admin.channels.lock().expect("admin lock");
        for (name, rate) in channels.iter() {
            report.insert(
                name.to_string(),
                ChannelInfo {
                    channel: name.to_string(),
                    subscribers: state.broker.subscriber_count(name),
                    rate_10s: rate.rate(now, 10),
                    rate_60s: rate.rate(now, 60),
                    events: rate.total,
                    last_event_ms: Some(rate.last_ms),
                },
            );
        }
    }
    let subscribed: BTreeSet<String> = {
        let live = state.admin.connections.lock().expect("admin lock");
        live.values()
            .flat_map(|c| {
                c.channels
                    .lock()
                    .expect("admin lock")
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    for name in subscribed {
        if report.contains_key(&name) {
            continue;
        }
        let Ok(channel) = ChannelName::new(name.clone()) else {
            continue;
        };
        report.insert(
            name.clone(),
            ChannelInfo {
                channel: name,
                subscribers: state.broker.subscriber_count(&channel),
                rate_10s: 0.0,
                rate_60s: 0.0,
                events: 0,
                last_event_ms: None,
            },
        );
    }
    let mut channels: Vec<ChannelInfo> = report.into_values().collect();
    channels.sort_by(|a, b| {
        b.rate_60s
            .total_cmp(&a.rate_60s)
            .then(b.last_event_ms.cmp(&a.last_event_ms))
            .then(a.channel.cmp(&b.channel))
    });
    Ok(Json(ChannelsReport { channels }))
}

/// `GET /admin/api/rate-limits`: the rate-limit decisions of the last minutes.
#[utoipa::path(get, path = "/admin/api/rate-limits", tag = "admin",
    responses(
        (status = 200, description = "This instance's rate-limit decisions of the last 10 minutes", body = RateLimitsReport),
        (status = 401, description = "Missing, invalid or expired token", body = courier_core::ErrorResponse),
        (status = 403, description = "The token's role is not `admin`", body = courier_core::ErrorResponse),
    ),
    security(("bearer" = [])))]
pub(crate) async fn rate_limits(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Result<Json<RateLimitsReport>, ApiError> {
    admin_claims(&state, &headers)?;
    let oldest = unix_ms().saturating_sub(WINDOW_SECS * 1000);
    let d = state.admin.decisions.lock().expect("admin lock");
    let minutes = d
        .totals
        .iter()
        .filter(|((m, _), _)| *m + 60_000 > oldest)
        .map(|((m, row), c)| RateLimitMinute {
            minute_ms: *m,
            bucket: state.limiter.bucket_name(*row).to_owned(),
            allowed: c[0],
            blocked: c[1],
            shadow_blocked: c[2],
        })
        .collect();
    let refusals = d
        .refusals
        .iter()
        .rev()
        .take_while(|r| r.at_ms >= oldest)
        .cloned()
        .collect();
    Ok(Json(RateLimitsReport {
        enabled: state.config.rate_limits.enabled,
        window_secs: WINDOW_SECS,
        kept: d.cap,
        minutes,
        refusals,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_rate_counts_whole_past_seconds_only() {
        let mut r = ChannelRate::new();
        let t = 1_000_000_000u64;
        for i in 0..20 {
            r.record(t + i * 500); // 2 per second for 10 s
        }
        let now = t + 10_000;
        assert_eq!(r.rate(now, 10), 2.0);
        assert!((r.rate(now, 60) - 20.0 / 60.0).abs() < 1e-9);
        // A minute later the slots are stale.
        assert_eq!(r.rate(now + 61_000, 60), 0.0);
        assert_eq!(r.total, 20);
    }

    #[test]
    fn the_refusal_ring_keeps_the_newest() {
        let admin = AdminState::new(3);
        let event = RateLimitedEvent {
            user: "u",
            tier: "standard",
            channel: "c",
            event_type: "t",
        };
        for i in 0..5 {
            admin.rate_limited(
                &event,
                &[
                    Some((0, RlDecision::Allowed)),
                    Some((i + 1, RlDecision::Blocked)),
                ],
                &|row| format!("b{row}"),
                Some(10),
            );
        }
        let d = admin.decisions.lock().unwrap();
        let kept: Vec<&str> = d.refusals.iter().map(|r| r.bucket.as_str()).collect();
        assert_eq!(kept, ["b3", "b4", "b5"]);
        let user_allowed: u64 = d
            .totals
            .iter()
            .filter(|((_, row), _)| *row == 0)
            .map(|(_, c)| c[0])
            .sum();
        assert_eq!(user_allowed, 5);
    }
}

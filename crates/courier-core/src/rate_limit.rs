//! Rate-limit response headers, in every form seen in the wild, folded into one
//! [`RateLimitInfo`] that the client-side [GCRA](crate::gcra) learns from.
//!
//! Header names are matched case-insensitively. Recognised fields:
//!
//! | field | form | gives |
//! | --- | --- | --- |
//! | `Retry-After` | see [`parse_retry_after`] | `retry_after` |
//! | `X-RateLimit-Limit` / `-Remaining` / `-Reset` | integers; reset in seconds | `limit`, `remaining`, `reset` |
//! | `RateLimit-Limit` / `-Remaining` / `-Reset` (IETF drafts 00–05) | integers; `RateLimit-Limit` may carry `;w=` | `limit`, `remaining`, `reset`, `policy` |
//! | `RateLimit` dictionary (drafts 06–07) | `limit=100, remaining=50, reset=5` | `limit`, `remaining`, `reset` |
//! | `RateLimit` list (draft 08 on) | `"default";r=50;t=30` | `remaining`, `reset` |
//! | `RateLimit-Policy` (drafts 06–07) | `100;w=60` | `policy` |
//! | `RateLimit-Policy` (draft 08 on) | `"default";q=100;w=60` | `policy` |
//!
//! Rules:
//! - **Reset values** are seconds (decimals allowed, rounded up to a millisecond). A value
//!   greater than 10⁹ (about 31.7 years, or 2001-09-09 as a date) is read as a Unix
//!   timestamp in seconds, as GitHub and others send in `X-RateLimit-Reset`, and turned into
//!   a delay relative to `wall_now` (zero if it is past). The rule applies to every reset
//!   field. Every reset and retry delay is capped at `cap`.
//! - **Malformed values are ignored** field by field (a negative number, garbage, an
//!   unterminated string): the other fields still count. Parsing never panics.
//! - **The most restrictive value wins** when several sources (or several list members)
//!   disagree, whatever their order: the smallest `limit` and `remaining`, the longest
//!   `retry_after`, the policy with the lowest rate (quota / window). `reset` comes from the
//!   source that reported the smallest `remaining` (the longest such reset on a tie), or,
//!   when none reported one, is the longest reset seen. So with two policies
//!   `"minute";r=0;t=5, "day";r=900;t=40000` the client waits 5 seconds, not 11 hours.
//! - A policy needs a quota ≥ 1 and a window > 0; other policies are ignored, and so is a
//!   policy with the boolean parameter `shadow` (it is measured, never enforced).
//!
//! # Per-bucket view
//!
//! A server that names its buckets (the draft 08 list forms, as the Courier server writes
//! them) is also read bucket by bucket with [`parse_bucket_headers`], for the
//! [per-bucket limiter](crate::limits):
//!
//! - `RateLimit-Policy: "user";q=600;w=60;burst=600, "type:deposit";q=5;w=60, …` gives one
//!   [`NamedPolicy`] per member whose item is a string (or a token) with `q ≥ 1` and
//!   `w > 0`: `burst` is the `burst` parameter (absent: none given), `shadow` the boolean
//!   parameter. Unnamed members (drafts 06–07, `100;w=60`) are left to the folded view.
//! - `RateLimit: "user";r=595;t=1, "type:deposit";r=0;t=60` gives one [`BucketRemaining`]
//!   per named member (`r` and `t` optional, `t` read as a reset value above).
//! - The first member of a name wins; malformed members are skipped.

use serde::{Deserialize, Serialize};

use crate::retry_after::{ceil_to_millis, parse_retry_after, parse_seconds};
use crate::time::{Duration, SystemTime, UNIX_EPOCH};

/// A quota policy announced by the server: `quota` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitPolicy {
    /// Requests allowed per window (at least 1).
    pub quota: u64,
    /// The window length; serialized as `window_ms`.
    #[serde(rename = "window_ms", with = "duration_ms")]
    pub window: Duration,
}

impl RateLimitPolicy {
    /// True when this policy allows strictly fewer requests per unit of time than `other`.
    pub fn is_stricter_than(&self, other: &RateLimitPolicy) -> bool {
        // quota/window < other.quota/other.window, cross-multiplied (no division, no floats).
        u128::from(self.quota) * other.window.as_nanos()
            < u128::from(other.quota) * self.window.as_nanos()
    }
}

/// What a response said about rate limits; every field is optional.
///
/// Serialized with durations in whole milliseconds (rounded up): `reset_ms`,
/// `retry_after_ms`, `policy.window_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitInfo {
    /// Requests allowed in the current window.
    pub limit: Option<u64>,
    /// Requests left in the current window.
    pub remaining: Option<u64>,
    /// Time until the window resets (serialized as `reset_ms`).
    #[serde(rename = "reset_ms", with = "opt_duration_ms")]
    pub reset: Option<Duration>,
    /// The quota policy, if the server announced one.
    pub policy: Option<RateLimitPolicy>,
    /// The `Retry-After` delay (serialized as `retry_after_ms`).
    #[serde(rename = "retry_after_ms", with = "opt_duration_ms")]
    pub retry_after: Option<Duration>,
}

impl RateLimitInfo {
    /// True when no rate-limit information was found.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// How long the client must wait before the next request, if the server said so:
    /// the longer of `retry_after` and, when `remaining == 0`, `reset`.
    pub fn wait(&self) -> Option<Duration> {
        let exhausted = if self.remaining == Some(0) {
            self.reset
        } else {
            None
        };
        self.retry_after.max(exhausted)
    }
}

/// Every response header the parsers here read, lower-case: what a driver that cannot hand
/// over all headers (a browser's `fetch` reads them one by one) must pass on, and what a
/// server must expose to browsers (CORS). A test holds it to the parser.
pub const READ_HEADERS: [&str; 9] = [
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
];

/// One bucket of a `RateLimit-Policy` list: `"name";q=…;w=…;burst=…;shadow`.
///
/// Serialized with the window in whole milliseconds (`window_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPolicy {
    /// The bucket's name, e.g. `user`, `type:deposit`, `fallback`.
    pub name: String,
    /// Requests allowed per window (at least 1).
    pub quota: u64,
    /// The window length; serialized as `window_ms`.
    #[serde(rename = "window_ms", with = "duration_ms")]
    pub window: Duration,
    /// Requests allowed back to back from idle, when the server says.
    #[serde(default)]
    pub burst: Option<u64>,
    /// A bucket that is measured but never refuses.
    #[serde(default)]
    pub shadow: bool,
}

impl NamedPolicy {
    /// The burst in force: the announced one, else the quota (a server that names no burst
    /// lets a whole window's quota go back to back), at least 1.
    pub fn effective_burst(&self) -> u64 {
        self.burst.unwrap_or(self.quota).max(1)
    }
}

/// One named member of a `RateLimit` list: `"name";r=…;t=…`.
///
/// Serialized with the reset in whole milliseconds (`reset_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRemaining {
    /// The bucket's name.
    pub name: String,
    /// Requests left back to back (`r`).
    #[serde(default)]
    pub remaining: Option<u64>,
    /// Time until the bucket is full again (`t`; serialized as `reset_ms`).
    #[serde(default, rename = "reset_ms", with = "opt_duration_ms")]
    pub reset: Option<Duration>,
}

/// The named buckets of a response (see the module docs, "Per-bucket view").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BucketHeaders {
    /// The server's table, from `RateLimit-Policy`, in header order.
    pub policies: Vec<NamedPolicy>,
    /// The state of the buckets this request was charged against, from `RateLimit`.
    pub remaining: Vec<BucketRemaining>,
}

/// Parses the named members of `RateLimit-Policy` and `RateLimit` (see the module docs).
///
/// `wall_now` turns Unix timestamps in `t` into delays; `cap` bounds every delay.
pub fn parse_bucket_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    wall_now: SystemTime,
    cap: Duration,
) -> BucketHeaders {
    let mut out = BucketHeaders::default();
    for (name, value) in headers {
        let name = name.trim();
        if name.eq_ignore_ascii_case("ratelimit-policy") {
            for member in split_top_level(value, b',') {
                let (bare, params) = parse_member(member);
                let Some(bucket) = member_name(bare) else {
                    continue;
                };
                let quota = param(&params, "q").and_then(parse_integer);
                let window = param(&params, "w").and_then(parse_seconds);
                let Some(p) = policy(quota, window) else {
                    continue;
                };
                if out.policies.iter().any(|q| q.name == bucket) {
                    continue;
                }
                out.policies.push(NamedPolicy {
                    name: bucket,
                    quota: p.quota,
                    window: p.window,
                    burst: param(&params, "burst")
                        .and_then(parse_integer)
                        .filter(|b| *b > 0),
                    shadow: has_flag(&params, "shadow"),
                });
            }
        } else if name.eq_ignore_ascii_case("ratelimit") {
            for member in split_top_level(value, b',') {
                let (bare, params) = parse_member(member);
                let Some(bucket) = member_name(bare) else {
                    continue;
                };
                if out.remaining.iter().any(|r| r.name == bucket) {
                    continue;
                }
                out.remaining.push(BucketRemaining {
                    name: bucket,
                    remaining: param(&params, "r").and_then(parse_integer),
                    reset: param(&params, "t").and_then(|t| parse_reset(t, wall_now, cap)),
                });
            }
        }
    }
    out
}

/// The name of a list member: a string (`"type:deposit"`, escapes undone) or a token
/// (`default`); `None` for an integer item or anything else.
fn member_name(bare: &str) -> Option<String> {
    if let Some(inner) = bare.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        // Only `\"` and `\\` are escapes; dropping a backslash keeps the text UTF-8.
        let mut name = Vec::with_capacity(inner.len());
        let mut bytes = inner.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'\\' => name.push(bytes.next()?),
                b'"' => return None,
                b => name.push(b),
            }
        }
        return String::from_utf8(name).ok().filter(|n| !n.is_empty());
    }
    let first = bare.bytes().next()?;
    let token = (first.is_ascii_alphabetic() || first == b'*')
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
    token.then(|| bare.to_owned())
}

/// Values reported together by one source (one header group or one list member).
#[derive(Debug, Default, Clone, Copy)]
struct Observation {
    limit: Option<u64>,
    remaining: Option<u64>,
    reset: Option<Duration>,
}

/// Parses rate-limit response headers (see the module docs for the forms and rules).
///
/// `wall_now` turns HTTP-dates and Unix timestamps into delays; `cap` bounds every delay.
pub fn parse_rate_limit_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    wall_now: SystemTime,
    cap: Duration,
) -> RateLimitInfo {
    let mut x_group = Observation::default();
    let mut ietf_group = Observation::default();
    let mut observations = Vec::new();
    let mut policies = Vec::new();
    let mut retry_after = None;

    for (name, value) in headers {
        let name = name.trim();
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("retry-after") {
            retry_after = retry_after.max(parse_retry_after(value, wall_now, cap));
        } else if is("x-ratelimit-limit") {
            min_into(&mut x_group.limit, first_integer(value));
        } else if is("x-ratelimit-remaining") {
            min_into(&mut x_group.remaining, first_integer(value));
        } else if is("x-ratelimit-reset") {
            max_into(&mut x_group.reset, parse_reset(value, wall_now, cap));
        } else if is("ratelimit-limit") {
            // Drafts 00-02 allow `10, 10;w=1, 50;w=60`: the first member is the limit in
            // force, and members with a window are policies.
            min_into(&mut ietf_group.limit, first_integer(value));
            for member in split_top_level(value, b',') {
                let (bare, params) = parse_member(member);
                if let (Some(quota), Some(w)) = (parse_integer(bare), param(&params, "w")) {
                    policies.extend(policy(Some(quota), parse_seconds(w)));
                }
            }
        } else if is("ratelimit-remaining") {
            min_into(&mut ietf_group.remaining, first_integer(value));
        } else if is("ratelimit-reset") {
            max_into(&mut ietf_group.reset, parse_reset(value, wall_now, cap));
        } else if is("ratelimit") {
            parse_ratelimit_field(value, wall_now, cap, &mut observations);
        } else if is("ratelimit-policy") {
            for member in split_top_level(value, b',') {
                let (bare, params) = parse_member(member);
                // A shadow policy never refuses: nothing to learn from it.
                if has_flag(&params, "shadow") {
                    continue;
                }
                // Draft 08 on: a named policy with `q`; drafts 06-07: the quota is the item.
                let quota = match param(&params, "q") {
                    Some(q) => parse_integer(q),
                    None => parse_integer(bare),
                };
                let window = param(&params, "w").and_then(parse_seconds);
                policies.extend(policy(quota, window));
            }
        }
    }
    observations.push(x_group);
    observations.push(ietf_group);

    let limit = observations.iter().filter_map(|o| o.limit).min();
    let remaining = observations.iter().filter_map(|o| o.remaining).min();
    let reset = remaining
        .and_then(|r| {
            observations
                .iter()
                .filter(|o| o.remaining == Some(r))
                .filter_map(|o| o.reset)
                .max()
        })
        .or_else(|| observations.iter().filter_map(|o| o.reset).max());
    let policy = policies
        .into_iter()
        .reduce(|best, p| if p.is_stricter_than(&best) { p } else { best });
    RateLimitInfo {
        limit,
        remaining,
        reset,
        policy,
        retry_after,
    }
}

/// The `RateLimit` field: a draft 06-07 dictionary or a draft 08+ list of named policies.
fn parse_ratelimit_field(
    value: &str,
    wall_now: SystemTime,
    cap: Duration,
    out: &mut Vec<Observation>,
) {
    let members = split_top_level(value, b',');
    let is_dictionary = members.iter().any(|m| {
        let (bare, _) = parse_member(m);
        !bare.starts_with('"') && bare.contains('=')
    });
    if is_dictionary {
        let mut o = Observation::default();
        for member in members {
            let (bare, _) = parse_member(member);
            let Some((key, v)) = bare.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if key.eq_ignore_ascii_case("limit") {
                min_into(&mut o.limit, parse_integer(v));
            } else if key.eq_ignore_ascii_case("remaining") {
                min_into(&mut o.remaining, parse_integer(v));
            } else if key.eq_ignore_ascii_case("reset") {
                max_into(&mut o.reset, parse_reset(v, wall_now, cap));
            }
        }
        out.push(o);
    } else {
        for member in members {
            let (_, params) = parse_member(member);
            out.push(Observation {
                limit: None,
                remaining: param(&params, "r").and_then(parse_integer),
                reset: param(&params, "t").and_then(|t| parse_reset(t, wall_now, cap)),
            });
        }
    }
}

fn policy(quota: Option<u64>, window: Option<Duration>) -> Option<RateLimitPolicy> {
    match (quota, window) {
        (Some(quota), Some(window)) if quota > 0 && !window.is_zero() => {
            Some(RateLimitPolicy { quota, window })
        }
        _ => None,
    }
}

/// Unix timestamps are told apart from delays by size: anything above 10⁹ seconds.
const UNIX_TIMESTAMP_THRESHOLD: Duration = Duration::from_secs(1_000_000_000);

/// A reset value: delta seconds, or a Unix timestamp in seconds above 10⁹; capped.
fn parse_reset(value: &str, wall_now: SystemTime, cap: Duration) -> Option<Duration> {
    let v = parse_seconds(value.trim())?;
    if v <= UNIX_TIMESTAMP_THRESHOLD {
        return Some(v.min(cap));
    }
    let delay = match UNIX_EPOCH.checked_add(v) {
        Some(at) => ceil_to_millis(at.duration_since(wall_now).unwrap_or(Duration::ZERO)),
        None => cap,
    };
    Some(delay.min(cap))
}

/// A non-negative integer, saturating at `u64::MAX`; `None` for anything else.
fn parse_integer(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// The integer item of the first list member (`"100"`, `"100;w=60"`, `"100, 50;w=1"`).
fn first_integer(value: &str) -> Option<u64> {
    let first = split_top_level(value, b',').into_iter().next()?;
    parse_integer(parse_member(first).0)
}

/// Splits on `sep` outside double-quoted strings (with `\` escapes inside them).
fn split_top_level(s: &str, sep: u8) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut in_string, mut escaped, mut start) = (false, false, 0);
    for (i, b) in s.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == sep {
            // `sep` is ASCII, so `i` is a char boundary.
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    parts.push(&s[start..]);
    parts
}

/// A list member `bare;k1=v1;k2` → (`bare`, [(k1, v1), (k2, "")]), all trimmed.
fn parse_member(member: &str) -> (&str, Vec<(&str, &str)>) {
    let mut parts = split_top_level(member, b';').into_iter();
    let bare = parts.next().unwrap_or("").trim();
    let params = parts
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (p.trim(), ""),
        })
        .collect();
    (bare, params)
}

fn param<'a>(params: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|&(_, v)| v)
}

/// A boolean parameter: present bare (`;shadow`) or as `?1`.
fn has_flag(params: &[(&str, &str)], key: &str) -> bool {
    params
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case(key) && (v.is_empty() || *v == "?1"))
}

fn min_into<T: Ord + Copy>(slot: &mut Option<T>, v: Option<T>) {
    if let Some(v) = v {
        *slot = Some(slot.map_or(v, |s| s.min(v)));
    }
}

fn max_into<T: Ord + Copy>(slot: &mut Option<T>, v: Option<T>) {
    *slot = (*slot).max(v);
}

/// `Duration` as whole milliseconds (rounded up) for serde.
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::retry_after::ceil_to_millis;
    use crate::time::{Duration, as_millis_u64};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(as_millis_u64(ceil_to_millis(*d)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `Option<Duration>` as whole milliseconds (rounded up) or `null` for serde.
mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::retry_after::ceil_to_millis;
    use crate::time::{Duration, as_millis_u64};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&as_millis_u64(ceil_to_millis(*d))),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_SECS: u64 = 1_700_000_000;

    fn parse(headers: &[(&str, &str)]) -> RateLimitInfo {
        let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        parse_rate_limit_headers(headers.iter().copied(), now, Duration::from_secs(300))
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    /// `READ_HEADERS` is what the parsers read: each name (any case) changes what they
    /// give with a value of its form, and a name not on the list changes nothing.
    #[test]
    fn read_headers_are_exactly_what_the_parsers_read() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        let value = |name: &str| match name {
            "ratelimit" => r#""user";r=5;t=1"#,
            "ratelimit-policy" => r#""user";q=10;w=60"#,
            _ => "7",
        };
        let read = |name: &str| {
            let h = [(name, value(&name.to_ascii_lowercase()))];
            let info = parse_rate_limit_headers(h, now, Duration::from_secs(300));
            let buckets = parse_bucket_headers(h, now, Duration::from_secs(300));
            info != RateLimitInfo::default() || buckets != BucketHeaders::default()
        };
        for name in READ_HEADERS {
            assert!(read(name), "{name} is read");
            assert!(
                read(&name.to_ascii_uppercase()),
                "{name} in capitals is read"
            );
        }
        assert!(!read("x-ratelimit-used"));
        assert!(!read("content-type"));
    }

    #[test]
    fn empty_and_unrelated() {
        let info = parse(&[("Content-Type", "text/plain")]);
        assert!(info.is_empty());
        assert_eq!(info.wait(), None);
    }

    #[test]
    fn x_ratelimit_case_insensitive_with_epoch_reset() {
        let reset = (NOW_SECS + 42).to_string();
        let info = parse(&[
            ("x-ratelimit-limit", "60"),
            ("X-RATELIMIT-REMAINING", "0"),
            ("X-RateLimit-Reset", &reset),
        ]);
        assert_eq!(
            (info.limit, info.remaining, info.reset),
            (Some(60), Some(0), secs(42))
        );
        assert_eq!(info.wait(), secs(42));
        // An epoch in the past is "now"; a delta is a delta; far future is capped.
        assert_eq!(parse(&[("X-RateLimit-Reset", "1000000001")]).reset, secs(0));
        assert_eq!(
            parse(&[("X-RateLimit-Reset", "1000000000")]).reset,
            secs(300)
        );
        assert_eq!(parse(&[("X-RateLimit-Reset", "12")]).reset, secs(12));
        assert_eq!(
            parse(&[("X-RateLimit-Reset", "99999999999999999999999")]).reset,
            secs(300)
        );
    }

    #[test]
    fn draft07_dictionary_and_policy() {
        let info = parse(&[
            ("RateLimit", "limit=100, remaining=50, reset=5"),
            (
                "RateLimit-Policy",
                "100;w=60, 1000;w=3600;comment=\"hour, long\"",
            ),
        ]);
        assert_eq!(
            (info.limit, info.remaining, info.reset),
            (Some(100), Some(50), secs(5))
        );
        // 1000/hour is stricter than 100/minute.
        assert_eq!(
            info.policy,
            Some(RateLimitPolicy {
                quota: 1000,
                window: Duration::from_secs(3600)
            })
        );
        assert_eq!(info.wait(), None);
    }

    #[test]
    fn structured_list_picks_the_exhausted_policy() {
        let info = parse(&[
            ("RateLimit", "\"day\";r=900;t=40000, \"minute\";r=0;t=5"),
            ("RateLimit-Policy", "\"minute\";q=100;w=60"),
        ]);
        assert_eq!((info.remaining, info.reset), (Some(0), secs(5)));
        assert_eq!(info.limit, None);
        assert_eq!(
            info.policy,
            Some(RateLimitPolicy {
                quota: 100,
                window: Duration::from_secs(60)
            })
        );
        assert_eq!(info.wait(), secs(5));
    }

    #[test]
    fn separate_ietf_fields_and_retry_after() {
        let info = parse(&[
            ("RateLimit-Limit", "10, 10;w=1"),
            ("RateLimit-Remaining", "0"),
            ("RateLimit-Reset", "3"),
            ("Retry-After", "7"),
        ]);
        assert_eq!(
            (info.limit, info.remaining, info.reset),
            (Some(10), Some(0), secs(3))
        );
        assert_eq!(
            info.policy,
            Some(RateLimitPolicy {
                quota: 10,
                window: Duration::from_secs(1)
            })
        );
        assert_eq!(info.retry_after, secs(7));
        assert_eq!(info.wait(), secs(7));
    }

    #[test]
    fn malformed_fields_are_ignored_one_by_one() {
        let info = parse(&[
            ("X-RateLimit-Limit", "-5"),
            ("X-RateLimit-Remaining", "3"),
            ("X-RateLimit-Reset", "soon"),
            ("RateLimit", "\"unterminated;r=1"),
            ("RateLimit-Policy", "0;w=60, 5;w=0, 5, \"x\";q=abc;w=1"),
            ("Retry-After", "tomorrow"),
        ]);
        assert_eq!(
            info,
            RateLimitInfo {
                remaining: Some(3),
                ..RateLimitInfo::default()
            }
        );
    }

    #[test]
    fn serde_uses_milliseconds() {
        let info = RateLimitInfo {
            limit: Some(1),
            remaining: None,
            reset: Some(Duration::from_micros(1_500)),
            policy: Some(RateLimitPolicy {
                quota: 2,
                window: Duration::from_secs(1),
            }),
            retry_after: None,
        };
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"limit":1,"remaining":null,"reset_ms":2,
                "policy":{"quota":2,"window_ms":1000},"retry_after_ms":null})
        );
        let back: RateLimitInfo = serde_json::from_value(json).unwrap();
        assert_eq!(back.reset, Some(Duration::from_millis(2)));
        let empty: RateLimitInfo = serde_json::from_str("{}").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn named_buckets_one_by_one() {
        let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
        let named = parse_bucket_headers(
            [
                (
                    "RateLimit-Policy",
                    "\"user\";q=600;w=60;burst=600, \"type:deposit\";q=5;w=60, \
                     \"type:audit\";q=1;w=60;shadow, 100;w=60",
                ),
                ("RateLimit", "\"user\";r=595;t=1, \"type:deposit\";r=0;t=60"),
            ],
            now,
            Duration::from_secs(300),
        );
        let names: Vec<_> = named.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["user", "type:deposit", "type:audit"]);
        assert_eq!(named.policies[0].effective_burst(), 600);
        assert_eq!(
            (named.policies[1].burst, named.policies[1].effective_burst()),
            (None, 5),
            "no burst given: the quota"
        );
        assert!(named.policies[2].shadow && !named.policies[1].shadow);
        assert_eq!(
            named.remaining[1],
            BucketRemaining {
                name: "type:deposit".into(),
                remaining: Some(0),
                reset: secs(60)
            }
        );
        assert_eq!(member_name("\"a\\\"b\""), Some("a\"b".into()));
        assert_eq!(member_name("\"\""), None);
        assert_eq!(member_name("42"), None);
        assert_eq!(member_name("default"), Some("default".into()));
    }

    #[test]
    fn split_respects_quotes_and_escapes() {
        assert_eq!(
            split_top_level(r#"a, "b,\"c", d"#, b','),
            vec!["a", r#" "b,\"c""#, " d"]
        );
        assert_eq!(split_top_level("", b','), vec![""]);
    }
}

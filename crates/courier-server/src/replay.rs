//! `GET /history/{channel}`: the replay API, a paged read of a channel's history over
//! [`crate::store::HistoryStore::read_page`], with cursors that continue a page in its
//! direction (docs/protocol.md, HTTP).

// `ApiError` carries its response headers inline (see `http`).
#![allow(clippy::result_large_err)]

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use courier_core::history::{DEFAULT_PAGE_LIMIT, HistoryStart, MAX_PAGE_LIMIT};
use courier_core::{ChannelName, ErrorCode, ErrorResponse};

use crate::SharedState;
use crate::http::{ApiError, authenticate};
use crate::metrics::AuthFailure;
use crate::store::{Page, PageFrom};

/// The query parameters, as documented in `/openapi.json` (the handler reads them itself,
/// to name the parameter at fault).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // never built: it only describes the query to utoipa
pub(crate) struct HistoryParams {
    /// Forwards: events with offsets greater than this one, oldest first.
    #[param(minimum = 0)]
    after: Option<u64>,
    /// Backwards: events with offsets smaller than this one, newest first (the latest
    /// offset + 1, or `direction=backward` alone, for "from the newest").
    #[param(minimum = 1)]
    before: Option<u64>,
    /// Forwards from the first event the server stored at or after this time: RFC 3339
    /// (`2026-01-02T03:04:05Z`) or Unix milliseconds.
    since: Option<String>,
    /// A previous page's `next`, as it came: continues that page in its direction.
    cursor: Option<String>,
    /// `forward` (default) or `backward`; without `after`/`before`/`since`/`cursor`,
    /// from the oldest held or from the newest. Must agree with them when given.
    #[param(inline, value_type = Option<String>, pattern = "^(forward|backward)$")]
    direction: Option<String>,
    /// Events per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// A read request once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Request {
    from: PageFrom,
    limit: usize,
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message).with_field(field)
}

/// A cursor: direction, the offset the next page starts from (exclusive) and the epoch,
/// in URL-safe base64 so that clients treat it as opaque.
/// (A page read `since` continues `after` its last event.)
fn encode_cursor(epoch: &str, backward: bool, offset: u64) -> String {
    let dir = if backward { "b" } else { "a" };
    URL_SAFE_NO_PAD.encode(format!("v1:{epoch}:{dir}:{offset}"))
}

fn decode_cursor(cursor: &str) -> Result<(String, PageFrom), ApiError> {
    let invalid = || {
        bad(
            "cursor",
            "not a cursor of this server: pass a page's `next` exactly as it came",
        )
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.split(':');
    let (Some("v1"), Some(epoch), Some(dir), Some(offset), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    let offset: u64 = offset.parse().map_err(|_| invalid())?;
    let from = match dir {
        "a" => PageFrom::After(offset),
        "b" if offset >= 1 => PageFrom::Before(offset),
        _ => return Err(invalid()),
    };
    Ok((epoch.to_owned(), from))
}

/// `since`: RFC 3339 or Unix milliseconds.
fn parse_since(value: &str) -> Result<u64, ApiError> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().map_err(|_| {
            bad(
                "since",
                "Unix milliseconds out of range: give a time at most 2^64 - 1 ms",
            )
        });
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            bad(
                "since",
                format!(
                    "`{value}` is neither Unix milliseconds nor an RFC 3339 timestamp \
                     (e.g. 2026-01-02T03:04:05Z): {e}"
                ),
            )
        })?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    // Before 1970: every event is at or after it.
    Ok(u64::try_from(ms.max(0)).unwrap_or(u64::MAX))
}

/// Offsets are 63-bit (the document's `int64`, PostgreSQL's `bigint`).
const MAX_OFFSET: u64 = i64::MAX as u64;

fn parse_offset(field: &str, value: &str, min: u64) -> Result<u64, ApiError> {
    match value.parse::<u64>() {
        Ok(v) if (min..=MAX_OFFSET).contains(&v) => Ok(v),
        _ => Err(bad(
            field,
            format!("must be a whole number from {min} to {MAX_OFFSET}, not `{value}`"),
        )),
    }
}

/// Reads the query: at most one start, `direction` agreeing with it, `limit` in range,
/// nothing unknown and nothing twice.
fn parse(pairs: &[(String, String)]) -> Result<(Request, Option<String>), ApiError> {
    const KNOWN: [&str; 6] = ["after", "before", "since", "cursor", "direction", "limit"];
    let mut seen: Vec<&str> = Vec::new();
    for (k, _) in pairs {
        let Some(known) = KNOWN.iter().find(|n| **n == k.as_str()) else {
            return Err(bad(
                k,
                format!("unknown parameter `{k}`: use {}", KNOWN.join(", ")),
            ));
        };
        if seen.contains(known) {
            return Err(bad(k, format!("`{k}` is given twice")));
        }
        seen.push(known);
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let start = HistoryStart::one_start(HistoryStart::PARAMETERS.map(|n| get(n).is_some()))
        .map_err(|e| bad(&e.field, e.message))?;
    let limit = match get("limit") {
        None => DEFAULT_PAGE_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE_LIMIT}, not `{v}`"),
                ));
            }
        },
    };
    let backward = match get("direction") {
        None => None,
        Some("forward") => Some(false),
        Some("backward") => Some(true),
        Some(v) => {
            return Err(bad(
                "direction",
                format!("must be `forward` or `backward`, not `{v}`"),
            ));
        }
    };
    let mut cursor_epoch = None;
    let from = match start {
        None if backward == Some(true) => PageFrom::Before(u64::MAX),
        None => PageFrom::After(0),
        Some("after") => PageFrom::After(parse_offset("after", get("after").unwrap_or(""), 0)?),
        Some("before") => PageFrom::Before(parse_offset("before", get("before").unwrap_or(""), 1)?),
        Some("since") => PageFrom::Since(parse_since(get("since").unwrap_or(""))?),
        Some(_) => {
            let (epoch, from) = decode_cursor(get("cursor").unwrap_or(""))?;
            cursor_epoch = Some(epoch);
            from
        }
    };
    let is_backward = matches!(from, PageFrom::Before(_));
    if backward.is_some_and(|b| b != is_backward) {
        return Err(bad(
            "direction",
            format!(
                "`direction={}` contradicts `{}`, which reads {}",
                if is_backward { "forward" } else { "backward" },
                start.unwrap_or("direction"),
                if is_backward { "backwards" } else { "forwards" },
            ),
        ));
    }
    Ok((
        Request {
            from,
            limit: limit as usize,
        },
        cursor_epoch,
    ))
}

/// The answer: the events written as live `event` frames' members (the core's writer), so
/// a page holds exactly what a subscription delivers.
fn page_json(channel: &ChannelName, page: &Page, next: Option<&str>) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut out = String::with_capacity(64 + page.events.len() * 256);
    out.push_str(&format!(
        r#"{{"channel":{},"epoch":{},"latest":{},"events":["#,
        q(channel.as_str()),
        q(&page.epoch),
        page.latest
    ));
    for (i, e) in page.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#"{{"epoch":{},"offset":{},"event":{}}}"#,
            q(&e.epoch),
            e.offset,
            e.event.to_json()
        ));
    }
    out.push_str(r#"],"next":"#);
    out.push_str(&next.map_or_else(|| "null".to_owned(), q));
    out.push('}');
    out
}

/// `GET /history/{channel}`: one page of the channel's history.
#[utoipa::path(get, path = "/history/{channel}", tag = "history",
    params(
        ("channel" = String, Path, description = "The channel"),
        HistoryParams,
    ),
    responses(
        (status = 200, description = "One page: the events with their epoch and offsets, in the page's direction, and `next`, the cursor of the following page (`null` when this page reached the end in its direction)", body = courier_core::history::HistoryPage),
        (status = 400, description = "A parameter is invalid (`field` names it), or several starts were given", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "The token may not read this channel (`FORBIDDEN_CHANNEL`)", body = ErrorResponse),
        (status = 409, description = "The cursor belongs to an epoch the history no longer has (`EPOCH_CHANGED`): start again", body = ErrorResponse),
        (status = 503, description = "The history backend is unavailable", body = ErrorResponse),
    ),
    security(("bearer" = [])))]
pub(crate) async fn history(
    State(state): State<SharedState>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    match answer(&state, channel, &headers, query).await {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(
    state: &SharedState,
    channel: String,
    headers: &HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<String, ApiError> {
    let claims = authenticate(state, headers)?;
    let channel = ChannelName::new(channel).map_err(|e| bad("channel", e.message))?;
    if !claims.can_read(&channel) {
        state.metrics.auth_failure(AuthFailure::Forbidden);
        return Err(ApiError::new(
            ErrorCode::ForbiddenChannel,
            format!("this token may not read `{channel}`"),
        ));
    }
    let Query(pairs) = query.map_err(|e| bad("query", e.body_text()))?;
    let (request, cursor_epoch) = parse(&pairs)?;
    let page = state
        .history
        .read_page(&channel, request.from, request.limit)
        .await
        .map_err(ApiError::store)?;
    if let Some(epoch) = cursor_epoch {
        if *epoch != *page.epoch {
            return Err(ApiError::new(
                ErrorCode::EpochChanged,
                format!(
                    "the cursor is from epoch `{epoch}` but the history is now epoch `{}` \
                     (it was lost): start again without a cursor",
                    page.epoch
                ),
            )
            .with_field("cursor"));
        }
    }
    let backward = matches!(request.from, PageFrom::Before(_));
    let next = page
        .events
        .last()
        .filter(|_| page.more)
        .map(|last| encode_cursor(&page.epoch, backward, last.offset));
    Ok(page_json(&channel, &page, next.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        s.split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn field(s: &str) -> String {
        parse(&q(s)).unwrap_err().field.unwrap()
    }

    #[test]
    fn starts_and_directions() {
        let from = |s: &str| parse(&q(s)).unwrap().0.from;
        assert_eq!(from(""), PageFrom::After(0));
        assert_eq!(from("direction=forward"), PageFrom::After(0));
        assert_eq!(from("direction=backward"), PageFrom::Before(u64::MAX));
        assert_eq!(from("after=5"), PageFrom::After(5));
        assert_eq!(from("before=5&direction=backward"), PageFrom::Before(5));
        assert_eq!(
            from("since=1700000000000"),
            PageFrom::Since(1_700_000_000_000)
        );
        assert_eq!(
            from("since=2023-11-14T22:13:20Z"),
            PageFrom::Since(1_700_000_000_000)
        );
        assert_eq!(parse(&q("")).unwrap().0.limit, 100);
        assert_eq!(parse(&q("limit=1000")).unwrap().0.limit, 1000);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(field("limit=0"), "limit");
        assert_eq!(field("limit=1001"), "limit");
        assert_eq!(field("limit=x"), "limit");
        assert_eq!(field("after=-1"), "after");
        assert_eq!(field("before=0"), "before");
        assert_eq!(field("before=9223372036854775808"), "before");
        assert_eq!(field("since=yesterday"), "since");
        assert_eq!(field("cursor=abc"), "cursor");
        assert_eq!(field("after=1&before=3"), "before");
        assert_eq!(field("after=1&direction=backward"), "direction");
        assert_eq!(field("direction=up"), "direction");
        assert_eq!(field("offset=3"), "offset");
        assert_eq!(field("limit=3&limit=4"), "limit");
    }

    #[test]
    fn cursors_round_trip() {
        for (backward, offset, from) in [
            (false, 0, PageFrom::After(0)),
            (false, 9, PageFrom::After(9)),
            (true, 3, PageFrom::Before(3)),
        ] {
            let c = encode_cursor("ep1", backward, offset);
            assert_eq!(decode_cursor(&c).unwrap(), ("ep1".to_owned(), from));
            let (req, epoch) = parse(&q(&format!("cursor={c}"))).unwrap();
            assert_eq!((req.from, epoch.as_deref()), (from, Some("ep1")));
        }
    }
}

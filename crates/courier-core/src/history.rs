//! The replay API, `GET /history/{channel}` (docs/protocol.md, HTTP): the query an SDK
//! sends, the page the server answers, and the paging policy every SDK follows.
//!
//! The policy is decided here once: a [`HistoryQuery`] is checked before anything is sent
//! ([`HistoryQuery::validate`]), written as a query string ([`HistoryQuery::query_string`]),
//! and a [`Pager`] follows each page's `next` cursor until the server says the page reached
//! the end in its direction (`next` is `null`). Drivers only move the bytes: they ask the
//! pager for the next request, send it, and hand the answer back.

use serde::{Deserialize, Serialize};

use crate::channel::ChannelName;
use crate::error::{
    Error, ErrorCode, ErrorResponse, FrameError, Refusal, ValidationError, ValidationKind,
};
use crate::event::Event;
use crate::frame::Delivery;
use crate::json::{self, JsonError, Reader, Seen};

/// The route of the replay API (axum syntax); see [`history_path`] for a channel's path.
pub const HISTORY_PATH: &str = "/history/{channel}";
/// The most events one page may hold (`limit`).
pub const MAX_PAGE_LIMIT: u32 = 1000;
/// The events per page when `limit` is not given.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;

/// The path of a channel's history (channel names need no escaping in a path segment).
pub fn history_path(channel: &ChannelName) -> String {
    format!("/history/{channel}")
}

/// Where a history read starts, and so which way it pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryStart {
    /// Forwards from the oldest event held (no parameter).
    Oldest,
    /// Backwards from the newest event (`direction=backward`).
    Newest,
    /// Forwards, offsets greater than this one, oldest first (`after`).
    After(u64),
    /// Backwards, offsets smaller than this one (at least 1), newest first (`before`).
    Before(u64),
    /// Forwards from the first event the server stored at or after this Unix time in
    /// milliseconds (`since`; the server also takes an RFC 3339 timestamp).
    Since(u64),
    /// Where a previous page ended, in its direction (`cursor`, from that page's `next`).
    Cursor(String),
}

impl HistoryStart {
    /// The start named by an SDK's keyword arguments: at most one of `after`, `before`,
    /// `since` (Unix ms) and `cursor`; `backward` (the direction, when said) alone starts
    /// from the newest, and must agree with the one given (the server's rules, checked
    /// before any request).
    pub fn from_parts(
        after: Option<u64>,
        before: Option<u64>,
        since: Option<u64>,
        cursor: Option<String>,
        backward: Option<bool>,
    ) -> Result<Self, ValidationError> {
        let first = Self::one_start([
            after.is_some(),
            before.is_some(),
            since.is_some(),
            cursor.is_some(),
        ])?;
        let start = match (after, before, since, cursor) {
            (Some(a), ..) => HistoryStart::After(a),
            (_, Some(b), ..) => HistoryStart::Before(b),
            (_, _, Some(s), _) => HistoryStart::Since(s),
            (.., Some(c)) => HistoryStart::Cursor(c),
            _ if backward == Some(true) => HistoryStart::Newest,
            _ => HistoryStart::Oldest,
        };
        // A cursor carries its own direction; the others have one.
        let reads_backward = matches!(start, HistoryStart::Before(_) | HistoryStart::Newest);
        let contradicts = backward.is_some_and(|b| b != reads_backward);
        if !matches!(start, HistoryStart::Cursor(_)) && contradicts {
            return Err(ValidationError::new(
                "direction",
                ValidationKind::BadFormat,
                format!(
                    "`{}` reads {}, not in the direction asked",
                    first.unwrap_or("direction"),
                    if reads_backward {
                        "backwards"
                    } else {
                        "forwards"
                    }
                ),
            ));
        }
        Ok(start)
    }

    /// The parameters that name a start, in the order [`HistoryStart::one_start`] takes
    /// their presence.
    pub const PARAMETERS: [&'static str; 4] = ["after", "before", "since", "cursor"];

    /// The rule the server and the SDKs share: at most one of `after`, `before`, `since`
    /// and `cursor` (`given` says which are present, in [`Self::PARAMETERS`] order). The
    /// one given, if any; two or more are refused naming the second.
    pub fn one_start(given: [bool; 4]) -> Result<Option<&'static str>, ValidationError> {
        let [a, b, s, c] = Self::PARAMETERS;
        let given = [
            given[0].then_some(a),
            given[1].then_some(b),
            given[2].then_some(s),
            given[3].then_some(c),
        ];
        let mut named = given.iter().flatten();
        let first = named.next().copied();
        let Some(second) = named.next() else {
            return Ok(first);
        };
        // Pushed by hand: `[&str]::join` was ~0.5 KB gzip of the WASM client.
        let mut got = String::new();
        for name in given.iter().flatten() {
            if !got.is_empty() {
                got.push_str(" and ");
            }
            got.push_str(name);
        }
        Err(ValidationError::new(
            *second,
            ValidationKind::BadFormat,
            format!("give at most one of after, before, since and cursor (got {got})"),
        ))
    }
}

/// One request of the replay API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Where to start.
    pub start: HistoryStart,
    /// Events per page, 1 to [`MAX_PAGE_LIMIT`].
    pub limit: u32,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        Self {
            start: HistoryStart::Oldest,
            limit: DEFAULT_PAGE_LIMIT,
        }
    }
}

impl HistoryQuery {
    /// Checks what the server would refuse with a 400, naming the same parameter.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !(1..=MAX_PAGE_LIMIT).contains(&self.limit) {
            return Err(ValidationError::new(
                "limit",
                ValidationKind::OutOfRange,
                format!("must be 1 to {MAX_PAGE_LIMIT}, not {}", self.limit),
            ));
        }
        match &self.start {
            HistoryStart::Before(0) => Err(ValidationError::new(
                "before",
                ValidationKind::OutOfRange,
                "offsets start at 1: nothing is before 0 (use `Newest` to start from the newest)",
            )),
            HistoryStart::Cursor(c) if c.is_empty() => Err(ValidationError::new(
                "cursor",
                ValidationKind::Missing,
                "the cursor is empty: pass a page's `next` as it came",
            )),
            _ => Ok(()),
        }
    }

    /// The query string (without `?`), e.g. `after=41&limit=100`.
    pub fn query_string(&self) -> String {
        let start = match &self.start {
            HistoryStart::Oldest => String::new(),
            HistoryStart::Newest => "direction=backward&".to_owned(),
            HistoryStart::After(o) => format!("after={o}&"),
            HistoryStart::Before(o) => format!("before={o}&"),
            HistoryStart::Since(ms) => format!("since={ms}&"),
            // Cursors are URL-safe base64 (the server's); escape anyway, in case.
            HistoryStart::Cursor(c) => format!("cursor={}&", percent_encode(c)),
        };
        format!("{start}limit={}", self.limit)
    }

    /// The request's path and query for `channel`, e.g. `/history/a.b?after=3&limit=100`.
    pub fn request_path(&self, channel: &ChannelName) -> String {
        format!("{}?{}", history_path(channel), self.query_string())
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `200` answer of `GET /history/{channel}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    /// The channel.
    pub channel: String,
    /// The current history epoch; the offsets belong to it.
    pub epoch: String,
    /// The channel's latest offset in `epoch` (0 when it never had an event).
    pub latest: u64,
    /// The events, in the page's direction (oldest first forwards, newest first backwards),
    /// each exactly as a subscription delivers it (a live `event` frame's members but `op`).
    pub events: Vec<Delivery>,
    /// The cursor of the next page in the same direction; `null` when this page reached the
    /// end (the newest event forwards, the oldest held backwards).
    pub next: Option<String>,
}

impl HistoryPage {
    /// Reads the `200` body with the core's JSON reader, as serde would (unknown members
    /// skipped, a repeated or missing one refused, `next` absent or `null` for none), without
    /// serde: the WASM client then carries no `serde_json` deserializer (its number parsing
    /// and messages were ~35 KB gzip of `.wasm`).
    pub fn from_json(text: &str) -> Result<Self, JsonError> {
        let mut r = Reader::new(text);
        let (mut channel, mut epoch, mut latest, mut events, mut next) =
            (None, None, None, None, None);
        let mut seen = Seen::default();
        r.object(|r, key| match key {
            "channel" => seen.read(0, r, key, &mut channel, |r| r.owned().map(Some)),
            "epoch" => seen.read(1, r, key, &mut epoch, |r| r.owned().map(Some)),
            "latest" => seen.read(2, r, key, &mut latest, |r| r.u64().map(Some)),
            "events" => seen.read(3, r, key, &mut events, |r| {
                let mut list = Vec::new();
                r.array(|r| {
                    list.push(read_delivery(r)?);
                    Ok(())
                })?;
                Ok(Some(list))
            }),
            "next" => seen.read(4, r, key, &mut next, |r| r.opt(Reader::owned)),
            _ => r.skip_value().map(drop),
        })?;
        r.end()?;
        Ok(Self {
            channel: json::required(channel, &r, "channel")?,
            epoch: json::required(epoch, &r, "epoch")?,
            latest: json::required(latest, &r, "latest")?,
            events: json::required(events, &r, "events")?,
            next,
        })
    }
}

/// One entry of a page's `events`: `{"epoch","offset","event"}`.
fn read_delivery(r: &mut Reader<'_>) -> Result<Delivery, JsonError> {
    let (mut epoch, mut offset, mut event) = (None, None, None);
    let mut seen = Seen::default();
    r.object(|r, key| match key {
        "epoch" => seen.read(0, r, key, &mut epoch, |r| r.owned().map(Some)),
        "offset" => seen.read(1, r, key, &mut offset, |r| r.u64().map(Some)),
        "event" => seen.read(2, r, key, &mut event, |r| Event::read_json(r).map(Some)),
        _ => r.skip_value().map(drop),
    })?;
    Ok(Delivery {
        epoch: json::required(epoch, r, "epoch")?,
        offset: json::required(offset, r, "offset")?,
        event: json::required(event, r, "event")?,
    })
}

/// Reads the answer to a history request: the page of a `200`, or the refusal of an error
/// status (its `ErrorResponse` body, or the code the status implies), as every SDK raises
/// it. A `TOKEN_EXPIRED` refusal is the driver's cue to renew the token and ask once more.
pub fn read_answer(status: u16, body: &str) -> Result<HistoryPage, Error> {
    if status == 200 {
        return HistoryPage::from_json(body).map_err(|e| {
            Error::Protocol(FrameError::Malformed(format!(
                "unreadable answer from GET {HISTORY_PATH}: {e}"
            )))
        });
    }
    if let Ok(parsed) = ErrorResponse::from_json(body) {
        return Err(Error::Refused(parsed.error.to_refusal(Some(status))));
    }
    let code = match status {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::ForbiddenChannel,
        409 => ErrorCode::EpochChanged,
        429 => ErrorCode::RateLimitExceeded,
        502..=504 => ErrorCode::Unavailable,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::Unknown,
    };
    let mut refusal = Refusal::new(code, format!("HTTP {status} from GET {HISTORY_PATH}"));
    refusal.status = Some(status);
    Err(Error::Refused(refusal))
}

/// Follows a history query page by page: [`Pager::request`] names the next request (none
/// once the end is reached), [`Pager::handle_answer`] takes its answer.
#[derive(Debug, Clone)]
pub struct Pager {
    channel: ChannelName,
    next: Option<HistoryQuery>,
    /// The current request was refused with `TOKEN_EXPIRED` once already.
    renewed: bool,
}

impl Pager {
    /// A pager over `channel` starting with `query`, checked first.
    pub fn new(channel: ChannelName, query: HistoryQuery) -> Result<Self, ValidationError> {
        query.validate()?;
        Ok(Self {
            channel,
            next: Some(query),
            renewed: false,
        })
    }

    /// The path and query of the next request, or `None` when the end was reached.
    pub fn request(&self) -> Option<String> {
        self.next.as_ref().map(|q| q.request_path(&self.channel))
    }

    /// Takes the HTTP answer to [`Pager::request`] (see [`read_answer`]): the page, and the
    /// next request follows it; `Ok(None)` when the same request is to be sent again with a
    /// renewed token (its first `TOKEN_EXPIRED`: every SDK renews once, then reports it).
    /// Any other refusal, or an unreadable page, is the error and leaves the pager where it
    /// was, so sending the request again retries that page.
    pub fn handle_answer(&mut self, status: u16, body: &str) -> Result<Option<HistoryPage>, Error> {
        match read_answer(status, body) {
            Err(Error::Refused(r)) if r.code == ErrorCode::TokenExpired && !self.renewed => {
                self.renewed = true;
                Ok(None)
            }
            Ok(page) => {
                self.renewed = false;
                self.handle_page(&page);
                Ok(Some(page))
            }
            Err(e) => {
                self.renewed = false;
                Err(e)
            }
        }
    }

    /// Takes a page read from the answer to [`Pager::request`]: the next request follows
    /// its `next` cursor with the same limit; a page without `next` ends the paging.
    pub fn handle_page(&mut self, page: &HistoryPage) {
        self.next = match (self.next.take(), &page.next) {
            (Some(q), Some(cursor)) => Some(HistoryQuery {
                start: HistoryStart::Cursor(cursor.clone()),
                limit: q.limit,
            }),
            _ => None,
        };
    }

    /// True once a page said it reached the end.
    pub fn is_done(&self) -> bool {
        self.next.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let q = |start, limit| HistoryQuery { start, limit }.query_string();
        assert_eq!(q(HistoryStart::Oldest, 100), "limit=100");
        assert_eq!(q(HistoryStart::Newest, 5), "direction=backward&limit=5");
        assert_eq!(q(HistoryStart::After(7), 1), "after=7&limit=1");
        assert_eq!(q(HistoryStart::Before(7), 1), "before=7&limit=1");
        assert_eq!(q(HistoryStart::Since(17), 9), "since=17&limit=9");
        assert_eq!(
            q(HistoryStart::Cursor("a+b/=".into()), 9),
            "cursor=a%2Bb%2F%3D&limit=9"
        );
    }

    #[test]
    fn validation_names_the_parameter() {
        let bad = |start, limit| HistoryQuery { start, limit }.validate().unwrap_err();
        assert_eq!(bad(HistoryStart::Oldest, 0).field, "limit");
        assert_eq!(bad(HistoryStart::Oldest, 1001).field, "limit");
        assert_eq!(bad(HistoryStart::Before(0), 10).field, "before");
        assert_eq!(bad(HistoryStart::Cursor(String::new()), 10).field, "cursor");
        assert!(HistoryQuery::default().validate().is_ok());
    }

    #[test]
    fn starts_from_keyword_arguments() {
        let f = HistoryStart::from_parts;
        assert_eq!(f(None, None, None, None, None), Ok(HistoryStart::Oldest));
        assert_eq!(
            f(None, None, None, None, Some(false)),
            Ok(HistoryStart::Oldest)
        );
        assert_eq!(
            f(None, None, None, None, Some(true)),
            Ok(HistoryStart::Newest)
        );
        assert_eq!(
            f(Some(3), None, None, None, None),
            Ok(HistoryStart::After(3))
        );
        assert_eq!(
            f(None, Some(3), None, None, None),
            Ok(HistoryStart::Before(3))
        );
        assert_eq!(
            f(None, Some(3), None, None, Some(true)),
            Ok(HistoryStart::Before(3))
        );
        assert_eq!(
            f(None, None, Some(9), None, None),
            Ok(HistoryStart::Since(9))
        );
        assert_eq!(
            f(None, None, None, Some("c".into()), Some(true)),
            Ok(HistoryStart::Cursor("c".into()))
        );
        assert_eq!(
            f(Some(1), Some(2), None, None, None).unwrap_err().field,
            "before"
        );
        assert_eq!(
            f(Some(1), None, None, None, Some(true)).unwrap_err().field,
            "direction"
        );
        assert_eq!(
            f(None, Some(1), None, None, Some(false)).unwrap_err().field,
            "direction"
        );
    }

    #[test]
    fn answers_become_pages_or_typed_refusals() {
        let page = read_answer(
            200,
            r#"{"channel":"a","epoch":"e","latest":1,"events":[{"epoch":"e","offset":1,"event":{"id":"i","type":"t","channel":"a","data":{"x":1},"metadata":{"timestamp":5}}}],"next":null}"#,
        )
        .unwrap();
        assert_eq!(page.events[0].offset, 1);
        assert_eq!(page.events[0].event.data.get(), r#"{"x":1}"#);
        let e = read_answer(
            409,
            r#"{"error":{"code":"EPOCH_CHANGED","message":"m","field":"cursor"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code(), "EPOCH_CHANGED");
        assert_eq!(e.category(), crate::error::ErrorCategory::Validation);
        assert_eq!(
            read_answer(403, "nope").unwrap_err().code(),
            "FORBIDDEN_CHANNEL"
        );
        assert_eq!(read_answer(200, "{").unwrap_err().code(), "PROTOCOL_ERROR");
    }

    /// `HistoryPage::from_json` reads what serde reads and refuses what serde refuses (serde,
    /// which the server writes pages with, is the oracle).
    #[test]
    fn pages_read_as_serde_reads_them() {
        let event = r#"{"id":"i","type":"t","channel":"a","data":{"x":[1,2.5,"s"]},"metadata":{"timestamp":5,"source":"s"}}"#;
        let entry = format!(r#"{{"epoch":"e","offset":3,"event":{event}}}"#);
        let good = [
            format!(
                r#"{{"channel":"a","epoch":"e","latest":3,"events":[{entry},{entry}],"next":"c"}}"#
            ),
            r#"{"channel":"a","epoch":"e","latest":0,"events":[],"next":null}"#.to_owned(),
            // `next` absent, unknown members anywhere, whitespace.
            format!(
                r#" {{ "extra":{{"k":[1]}}, "events":[{{"x":1,"event":{event},"offset":1,"epoch":"e"}}], "latest":9, "epoch":"e", "channel":"a" }} "#
            ),
        ];
        for text in &good {
            let oracle: HistoryPage = serde_json::from_str(text).unwrap();
            assert_eq!(HistoryPage::from_json(text).unwrap(), oracle, "{text}");
        }
        let bad = [
            String::new(),
            "{".to_owned(),
            "[]".to_owned(),
            r#"{"channel":"a","epoch":"e","latest":0,"next":null}"#.to_owned(),
            r#"{"channel":"a","epoch":"e","latest":-1,"events":[]}"#.to_owned(),
            r#"{"channel":"a","epoch":"e","latest":1.5,"events":[]}"#.to_owned(),
            r#"{"channel":"a","epoch":"e","latest":1,"events":[],"next":7}"#.to_owned(),
            r#"{"channel":"a","channel":"b","epoch":"e","latest":1,"events":[]}"#.to_owned(),
            r#"{"channel":"a","epoch":"e","latest":1,"events":[{"epoch":"e","offset":1}]}"#
                .to_owned(),
            format!(r#"{{"channel":"a","epoch":"e","latest":1,"events":[{entry}]}} x"#),
            format!(
                r#"{{"channel":"a","epoch":"e","latest":1,"events":[{{"epoch":"e","offset":"1","event":{event}}}]}}"#
            ),
        ];
        for text in &bad {
            assert!(serde_json::from_str::<HistoryPage>(text).is_err(), "{text}");
            assert!(HistoryPage::from_json(text).is_err(), "{text}");
        }
    }

    #[test]
    fn pager_follows_next_until_null() {
        let ch = ChannelName::new("a.b").unwrap();
        let mut p = Pager::new(
            ch,
            HistoryQuery {
                start: HistoryStart::After(3),
                limit: 2,
            },
        )
        .unwrap();
        assert_eq!(p.request().unwrap(), "/history/a.b?after=3&limit=2");
        let page = |next: Option<&str>| HistoryPage {
            channel: "a.b".into(),
            epoch: "e".into(),
            latest: 9,
            events: vec![],
            next: next.map(str::to_owned),
        };
        p.handle_page(&page(Some("c1")));
        assert_eq!(p.request().unwrap(), "/history/a.b?cursor=c1&limit=2");
        p.handle_page(&page(None));
        assert!(p.is_done());
        assert_eq!(p.request(), None);
    }

    #[test]
    fn pager_renews_an_expired_token_once_per_request() {
        let ch = ChannelName::new("a.b").unwrap();
        let mut p = Pager::new(ch, HistoryQuery::default()).unwrap();
        let expired = r#"{"error":{"code":"TOKEN_EXPIRED","message":"expired"}}"#;
        let page = r#"{"channel":"a.b","epoch":"e","latest":0,"events":[],"next":"c1"}"#;
        // The first TOKEN_EXPIRED asks again; the second one is reported.
        assert!(matches!(p.handle_answer(401, expired), Ok(None)));
        match p.handle_answer(401, expired) {
            Err(Error::Refused(r)) => assert_eq!(r.code, ErrorCode::TokenExpired),
            other => panic!("{other:?}"),
        }
        // A page moves on, and the next request may renew again.
        assert!(matches!(p.handle_answer(401, expired), Ok(None)));
        let got = p.handle_answer(200, page).unwrap().unwrap();
        assert_eq!(got.next.as_deref(), Some("c1"));
        assert_eq!(p.request().unwrap(), "/history/a.b?cursor=c1&limit=100");
        assert!(matches!(p.handle_answer(401, expired), Ok(None)));
    }
}

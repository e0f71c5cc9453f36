//! `history()`'s pager: the core's [`Pager`] behind one JavaScript object.
//!
//! The core decides everything about the replay API (`courier_core::history`): which starts
//! may be combined and which direction they page in, the limit's range, the query string and
//! the path, the HTTP base (from the client's URLs, as for publishing), following each page's
//! `next`, reading a `200` into a page and any other answer into a typed refusal with its
//! category, and asking once more with a renewed token when the server says it expired (as
//! `courier-client` does). The facade (`npm/src/history.ts`) moves the bytes: it translates
//! the options' host types, sends each `GET` with `fetch` (with the caller's `AbortSignal`)
//! and hands the answer back, and makes the async iterator. The pager is synchronous: a
//! `fetch` driven from here cost the subscriber entry 2.1 KB gzip more (docs/benchmarks.md).

use courier_core::history::{DEFAULT_PAGE_LIMIT, HistoryPage, HistoryQuery, HistoryStart, Pager};
use courier_core::{ChannelName, Error};
use js_sys::{Array, Object, Reflect};
use wasm_bindgen::prelude::*;

use crate::driver::{delivery_object, parse_endpoints, thrown};

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &str = r#"
/**
 * A `history()` query with its host types translated (the facade checked that the numbers
 * are whole and turned `since` into Unix ms and `direction` into `backward`); the core
 * checks the rest.
 */
export interface CoreHistoryQuery {
  after?: number;
  before?: number;
  sinceMs?: number;
  cursor?: string;
  /** The direction asked, if one was: `true` for backward. */
  backward?: boolean;
  limit?: number;
}

/** One page as the core read it; each event is the object a live handler gets. */
export interface CoreHistoryPage {
  channel: string;
  epoch: string;
  latest: number;
  events: object[];
  next: string | null;
}
"#;

#[wasm_bindgen]
extern "C" {
    /// See `CoreHistoryQuery` above.
    #[wasm_bindgen(typescript_type = "CoreHistoryQuery")]
    pub type HistoryArgs;
    #[wasm_bindgen(method, getter)]
    fn after(this: &HistoryArgs) -> Option<f64>;
    #[wasm_bindgen(method, getter)]
    fn before(this: &HistoryArgs) -> Option<f64>;
    #[wasm_bindgen(method, getter, js_name = sinceMs)]
    fn since_ms(this: &HistoryArgs) -> Option<f64>;
    #[wasm_bindgen(method, getter)]
    fn cursor(this: &HistoryArgs) -> Option<String>;
    #[wasm_bindgen(method, getter)]
    fn backward(this: &HistoryArgs) -> Option<bool>;
    #[wasm_bindgen(method, getter)]
    fn limit(this: &HistoryArgs) -> Option<f64>;
}

/// Reads one channel's history page by page (the core's [`Pager`]); made by the facade's
/// `history()`.
#[wasm_bindgen]
pub struct HistoryPager {
    pager: Pager,
    /// `http(s)://host[:port][/prefix]`, as the core derives it from the client's URLs.
    http_base: String,
}

#[wasm_bindgen]
impl HistoryPager {
    /// A reader of `channel` from the client's `url` (and `httpUrl`) with `query`; throws a
    /// core error (a `ValidationError` naming the parameter) for what the server would refuse.
    #[wasm_bindgen(constructor)]
    pub fn new(
        url: &str,
        http_url: Option<String>,
        channel: &str,
        query: &HistoryArgs,
    ) -> Result<HistoryPager, JsValue> {
        let http_base = parse_endpoints(url, http_url)?.http_base;
        let channel = ChannelName::new(channel).map_err(thrown)?;
        // The facade passed whole numbers from 0 to 2^53 (and a limit below 2^32).
        let whole = |v: Option<f64>| v.map(|v| v as u64);
        let start = HistoryStart::from_parts(
            whole(query.after()),
            whole(query.before()),
            whole(query.since_ms()),
            query.cursor(),
            query.backward(),
        )
        .map_err(thrown)?;
        let limit = query.limit().map_or(DEFAULT_PAGE_LIMIT, |v| v as u32);
        let pager = Pager::new(channel, HistoryQuery { start, limit }).map_err(thrown)?;
        Ok(HistoryPager { pager, http_base })
    }

    /// The URL of the next request, or `undefined` once a page reached the end in the
    /// query's direction.
    pub fn request(&self) -> Option<String> {
        let path = self.pager.request()?;
        Some(format!("{}{path}", self.http_base))
    }

    /// Takes the answer to [`request`](Self::request): the page (the next `request()`
    /// follows its `next`); `null` when the same request is to be sent again with a renewed
    /// token (the first `TOKEN_EXPIRED`). Throws a core error for any other refusal or an
    /// unreadable page; the reader then stays where it was, so sending the request again
    /// retries that page.
    #[wasm_bindgen(js_name = handleAnswer, unchecked_return_type = "CoreHistoryPage | null")]
    pub fn handle_answer(&mut self, status: u16, body: &str) -> Result<JsValue, JsValue> {
        match self.pager.handle_answer(status, body) {
            Ok(Some(page)) => Ok(page_object(&page)),
            Ok(None) => Ok(JsValue::NULL),
            Err(e) => Err(thrown(e)),
        }
    }

    /// The core's error for a request that got no answer (`fetch` failed: `why`), to throw.
    #[wasm_bindgen(js_name = transportError, unchecked_return_type = "object")]
    pub fn transport_error(&self, why: &str) -> JsValue {
        thrown(Error::Transport(why.to_owned()))
    }
}

/// The page as JavaScript gets it (`CoreHistoryPage`).
fn page_object(page: &HistoryPage) -> JsValue {
    let events: Array = page.events.iter().map(delivery_object).collect();
    let object = Object::new();
    let members: [(&str, JsValue); 5] = [
        ("channel", JsValue::from_str(&page.channel)),
        ("epoch", JsValue::from_str(&page.epoch)),
        ("latest", JsValue::from_f64(page.latest as f64)),
        ("events", events.into()),
        (
            "next",
            page.next
                .as_deref()
                .map_or(JsValue::NULL, JsValue::from_str),
        ),
    ];
    for (name, value) in members {
        // Setting a member of a fresh plain object cannot fail.
        let _ = Reflect::set(&object, &JsValue::from_str(name), &value);
    }
    object.into()
}

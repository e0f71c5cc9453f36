//! `history()`'s driver: the core's [`Pager`] with `fetch`, behind one JavaScript object.
//!
//! The core decides everything about the replay API (`courier_core::history`): which starts
//! may be combined and which direction they page in, the limit's range, the query string and
//! the path, following each page's `next`, reading a `200` into a page and any other answer
//! into a typed refusal with its category. This module moves the bytes, as the publish
//! queue's `fetch` does in [`crate::driver`]: a `GET` through the global `fetch` (web-sys and
//! wasm-bindgen-futures) with the token the facade's provider gives, renewed once when the
//! server says it expired (as `courier-client` does). The facade (`npm/src/history.ts`)
//! translates the options' host types and makes the async iterator.

use std::cell::RefCell;
use std::rc::Rc;

use courier_core::history::{
    DEFAULT_PAGE_LIMIT, HistoryPage, HistoryQuery, HistoryStart, Pager, read_answer,
};
use courier_core::{ChannelName, Error, ErrorCode};
use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{AbortSignal, Headers, RequestInit, Response};

use crate::driver::{delivery_object, describe, parse_endpoints, thrown};

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

    /// `fetch(url, init)` of the global scope, looked up at each call (as the publish
    /// queue's: a test's or an app's replacement of `globalThis.fetch` is used).
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_with_init(url: &str, init: &RequestInit) -> Promise;
}

/// Reads one channel's history page by page (the core's [`Pager`]); made by the facade's
/// `history()`.
#[wasm_bindgen]
pub struct HistoryPager {
    /// Shared with the request in flight (a promise outlives the call that made it).
    pager: Rc<RefCell<Pager>>,
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
        Ok(HistoryPager {
            pager: Rc::new(RefCell::new(pager)),
            http_base,
        })
    }

    /// The next page, or `undefined` once a page reached the end in the query's direction.
    /// `token` is the facade's provider (called for each request); `signal` aborts the
    /// request. Rejects with a core error: the server's refusal, or `TRANSPORT` when no
    /// answer came (the facade rethrows an abort's reason instead). A rejected call leaves
    /// the reader where it was: calling again asks for the same page.
    #[wasm_bindgen(unchecked_return_type = "Promise<CoreHistoryPage | undefined>")]
    pub fn next(&self, token: Function, signal: Option<AbortSignal>) -> Promise {
        let pager = Rc::clone(&self.pager);
        let base = self.http_base.clone();
        future_to_promise(async move { next_page(&pager, &base, &token, signal.as_ref()).await })
    }
}

async fn next_page(
    pager: &RefCell<Pager>,
    base: &str,
    token: &Function,
    signal: Option<&AbortSignal>,
) -> Result<JsValue, JsValue> {
    let Some(path) = pager.borrow().request() else {
        return Ok(JsValue::UNDEFINED);
    };
    let url = format!("{base}{path}");
    let mut renewed = false;
    loop {
        let bearer = fetch_token(token).await.map_err(thrown)?;
        let (status, body) = get(&url, &bearer, signal)
            .await
            .map_err(|e| thrown(Error::Transport(format!("GET {url}: {}", describe(&e)))))?;
        match read_answer(status, &body) {
            // An expired token: renew it and ask once more.
            Err(Error::Refused(r)) if r.code == ErrorCode::TokenExpired && !renewed => {
                renewed = true;
            }
            Ok(page) => {
                pager.borrow_mut().handle_page(&page);
                return Ok(page_object(&page));
            }
            Err(e) => return Err(thrown(e)),
        }
    }
}

/// The token from the facade's provider (a function returning a promise of a string).
async fn fetch_token(token: &Function) -> Result<String, Error> {
    let failed = |why: String| Error::Transport(format!("the token provider failed: {why}"));
    let promise: Promise = token
        .call0(&JsValue::UNDEFINED)
        .map_err(|e| failed(describe(&e)))?
        .unchecked_into();
    let value = JsFuture::from(promise)
        .await
        .map_err(|e| failed(describe(&e)))?;
    value
        .as_string()
        .ok_or_else(|| failed("it returned no string".into()))
}

/// One `GET` with the bearer token: the status and the body's text.
async fn get(
    url: &str,
    token: &str,
    signal: Option<&AbortSignal>,
) -> Result<(u16, String), JsValue> {
    let headers = Headers::new()?;
    headers.set("authorization", &format!("Bearer {token}"))?;
    let init = RequestInit::new();
    init.set_headers(&headers);
    init.set_signal(signal);
    let response: Response = JsFuture::from(fetch_with_init(url, &init))
        .await?
        .unchecked_into();
    let body = JsFuture::from(response.text()?).await?;
    Ok((response.status(), body.as_string().unwrap_or_default()))
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

//! Reading a channel's history through the replay API, page by page.
//!
//! The core decides the paging ([`courier_core::history::Pager`]: the query, following
//! `next`, reading answers into pages or typed refusals); this module sends the requests.

use std::sync::Arc;
use std::time::Duration;

use courier_core::history::{HistoryPage, Pager};
use courier_core::{Delivery, Error};

use crate::token::TokenProvider;

/// What a history reader needs of its client: the HTTP pool, the server and the token.
#[derive(Clone)]
pub(crate) struct HttpIo {
    pub(crate) http: reqwest::Client,
    pub(crate) http_base: String,
    pub(crate) tokens: Arc<dyn TokenProvider>,
    pub(crate) request_timeout: Duration,
}

/// The pages of one history query, from [`crate::Client::history`]: call
/// [`History::next_page`] until it answers `None` (the end in the query's direction), or
/// [`History::next_event`] for one event at a time. Events are the same [`Delivery`] a
/// subscription yields.
pub struct History {
    io: HttpIo,
    pager: Pager,
    /// Events of the last page not handed out by `next_event` yet.
    pending: std::collections::VecDeque<Delivery>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("next", &self.pager.request())
            .finish_non_exhaustive()
    }
}

impl History {
    pub(crate) fn new(io: HttpIo, pager: Pager) -> Self {
        Self {
            io,
            pager,
            pending: Default::default(),
        }
    }

    /// The next page, `None` once a page reached the end. An error (a refused request, a
    /// network failure) leaves the reader where it was: calling again retries that page.
    pub async fn next_page(&mut self) -> Option<Result<HistoryPage, Error>> {
        let path = self.pager.request()?;
        let mut refreshed = false;
        loop {
            let token = match self.io.tokens.token(refreshed).await {
                Ok(t) => t,
                Err(e) => {
                    return Some(Err(Error::Transport(format!(
                        "the token provider failed: {e}"
                    ))));
                }
            };
            let url = format!("{}{path}", self.io.http_base);
            let sent = self
                .io
                .http
                .get(&url)
                .bearer_auth(token)
                .timeout(self.io.request_timeout)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => return Some(Err(Error::Transport(format!("GET {url}: {e}")))),
            };
            let status = response.status().as_u16();
            let body = match response.text().await {
                Ok(b) => b,
                Err(e) => return Some(Err(Error::Transport(format!("GET {url}: {e}")))),
            };
            match self.pager.handle_answer(status, &body) {
                Ok(Some(page)) => return Some(Ok(page)),
                // The core's rule: an expired token is renewed, and the page asked once more.
                Ok(None) => refreshed = true,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next event in the query's direction, fetching pages as needed; `None` at the end.
    pub async fn next_event(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            if let Some(d) = self.pending.pop_front() {
                return Some(Ok(d));
            }
            match self.next_page().await? {
                Ok(page) => self.pending.extend(page.events),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

//! Publishing: [`Publisher`], a handle on the client's one task.
//!
//! Everything about *what* to send and *when* (stamping, batching, priorities, idempotency
//! ids, Retry-After, the client-side rate limits, backoff, the retry budget, dead letters,
//! token expiry) is decided by the core ([`courier_core::client`]). A publish hands the core
//! a [`PublishItem`] and waits for its outcome.

use std::sync::Arc;

use courier_core::client::PublishItem;
use courier_core::queue::{DeadLetter, PublishResult, Ticket};
use courier_core::time::SystemTime;
use courier_core::{ClientStats, Error};
use tokio::sync::oneshot;

use crate::Owner;
use crate::driver::Completer;

/// Publishes events over HTTP through the core. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    pub(crate) owner: Arc<Owner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    /// Stamps, validates and queues `item`; `on_done` gets its outcome. Fails at once, with
    /// nothing sent, when the event is invalid, the queue is full or the client is closed.
    pub fn enqueue(&self, item: PublishItem, on_done: Completer) -> Result<Ticket, Error> {
        self.owner.shared.with(|st, now| {
            let ticket = st.core.publish(item, now, SystemTime::now())?;
            st.waiters.insert(ticket, on_done);
            Ok(ticket)
        })
    }

    /// Queues several events at once: all are validated first, and none is queued if one
    /// is invalid (the error names its index in `field`) or they do not all fit.
    pub fn enqueue_many(&self, items: Vec<(PublishItem, Completer)>) -> Result<Vec<Ticket>, Error> {
        let (items, completers): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        self.owner.shared.with(|st, now| {
            let tickets = st.core.publish_many(items, now, SystemTime::now())?;
            st.waiters.extend(tickets.iter().copied().zip(completers));
            Ok(tickets)
        })
    }

    /// Publishes `item` and waits for its acknowledgement (or its final failure).
    ///
    /// Dropping the future (a timeout, a cancelled task) withdraws the event if it has not
    /// been sent yet; once sent it is left to finish (see [`Publisher::cancel`]).
    pub async fn publish(&self, item: PublishItem) -> Result<PublishResult, Error> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.enqueue(
            item,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        let mut withdraw = WithdrawOnDrop(Some((self, ticket)));
        let result = rx
            .await
            .unwrap_or_else(|_| Err(Error::Transport("the client stopped".into())));
        withdraw.0 = None;
        result
    }

    /// Withdraws a queued event that has not been sent yet; returns whether it was (its
    /// completer is then dropped uncalled). An event already sent is left to finish, since
    /// its first attempt may have reached the server, and its completer is still called.
    pub fn cancel(&self, ticket: Ticket) -> bool {
        let withdrawn = self.owner.shared.with(|st, _| {
            let withdrawn = st.core.cancel(ticket);
            if withdrawn {
                st.waiters.remove(&ticket);
            }
            withdrawn
        });
        if withdrawn {
            // `flush()` may be waiting for just this event.
            self.owner.shared.progress.notify_waiters();
        }
        withdrawn
    }

    /// Waits until every queued event is acknowledged or dead-lettered.
    pub async fn flush(&self) {
        let shared = &self.owner.shared;
        loop {
            let notified = shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = shared.lock();
                if st.core.is_flushed() && st.waiters.is_empty() {
                    return;
                }
            }
            if *shared.done.borrow() {
                return;
            }
            notified.await;
        }
    }

    /// Closes the client (there is one for both halves: see [`crate::Client::close`]).
    pub async fn close(&self) {
        self.owner.close().await;
    }

    /// Every counter of the client.
    pub fn stats(&self) -> ClientStats {
        self.owner.stats()
    }

    /// The events given up, with their reasons (oldest first).
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.owner.shared.lock().core.dead_letters().to_vec()
    }

    /// Whether nothing is queued or in flight.
    pub fn is_flushed(&self) -> bool {
        self.owner.shared.lock().core.is_flushed()
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

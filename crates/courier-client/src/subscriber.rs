//! Subscribing: [`Subscriber`] (a handle on the client's one task) and [`Subscription`]
//! (one listener's items).
//!
//! Everything is decided by the core ([`courier_core::client`]): connecting on the first
//! subscription, authentication, resubscription with `since`, duplicates, gaps, heartbeats,
//! backoff, token refresh, several listeners per channel, and flow control. A subscription
//! holds at most `subscription_buffer` unread events (see
//! [`courier_core::ClientConfig::subscription_buffer`]): a listener that falls that far
//! behind pauses its channel, which resumes after its last event once every listener has read
//! half, so memory stays bounded and only what the server no longer holds is lost (one
//! [`SubscriptionItem::Gap`] says what). A [`Subscription`] tells the core how much it has
//! read, in batches.

use std::collections::VecDeque;
use std::sync::Arc;

use courier_core::client::ListenerId;
use courier_core::connection::{GapReason, State as ConnState};
use courier_core::{ChannelName, Delivery, Error, StreamPosition, UsageError};
use tokio::sync::{mpsc, watch};

use crate::Owner;

/// Something that happened on the client, for connection-state listeners.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The WebSocket connection changed state.
    State(ConnState),
    /// An error the application may want to know about (the state says if it was fatal).
    Error(Error),
}

/// A listener for [`ClientEvent`]s, called on the client's runtime; keep it quick.
pub type Listener = Arc<dyn Fn(ClientEvent) + Send + Sync>;

/// What a subscription yields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionItem {
    /// The subscription is live (again, after a reconnect or after a pause for falling
    /// behind: see the module docs).
    Subscribed {
        /// Whether everything since the last position is replayed.
        recovered: bool,
        /// The channel's position when it started.
        position: StreamPosition,
    },
    /// An event; never a duplicate, always in offset order.
    Event(Delivery),
    /// Events were missed: those after `last` up to and including `position`, which the
    /// server no longer holds (see [`courier_core::connection::Output::Gap`]). At most one
    /// per (re)subscription; the events that follow continue right after `position`.
    Gap {
        /// Where the subscription stood: its last event, or its `since`.
        last: Option<StreamPosition>,
        /// Where delivery continues: the next event is the one after it.
        position: StreamPosition,
        /// Why.
        reason: GapReason,
    },
    /// The subscription ended for good: refused by the server, the connection closed for
    /// good, or the client closed (`None` when closed by the application).
    Ended(Option<Error>),
}

/// How many reads a subscription reports to the core at once while it still has items to
/// read (each report takes the client's lock); it reports the rest before it waits, so the
/// core never misses the reads that would resume a paused channel. The core decides pausing
/// and resuming from these reports.
const REPORT_EVERY: usize = 64;

/// One listener on a channel; dropping it unsubscribes (the server subscription ends with
/// the channel's last listener).
pub struct Subscription {
    channel: ChannelName,
    listener: ListenerId,
    rx: mpsc::UnboundedReceiver<SubscriptionItem>,
    buffered: VecDeque<SubscriptionItem>,
    owner: Arc<Owner>,
    position: Option<StreamPosition>,
    /// Events read and not reported to the core yet.
    unreported: usize,
    ended: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .field("listener", &self.listener)
            .field("position", &self.position)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Where this subscription stands: the position of the last event returned, or the
    /// `position` of a [`SubscriptionItem::Gap`] returned after it. Pass it as `since` to
    /// resume elsewhere without repeating an event or reporting a gap twice.
    pub fn position(&self) -> Option<&StreamPosition> {
        self.position.as_ref()
    }

    /// The next item; `None` once the subscription ended and everything was read.
    pub async fn next(&mut self) -> Option<SubscriptionItem> {
        if let Some(item) = self.try_next() {
            return Some(item);
        }
        if self.ended {
            return None;
        }
        // About to wait: the core must know everything was read, or a paused channel
        // would never resume.
        self.report();
        match self.rx.recv().await {
            Some(item) => Some(self.note(item)),
            None => {
                self.ended = true;
                None
            }
        }
    }

    /// The next item if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<SubscriptionItem> {
        if let Some(item) = self.buffered.pop_front() {
            return Some(self.note(item));
        }
        self.rx.try_recv().ok().map(|i| self.note(i))
    }

    fn note(&mut self, item: SubscriptionItem) -> SubscriptionItem {
        match &item {
            SubscriptionItem::Event(d) => {
                self.position = Some(StreamPosition {
                    epoch: d.epoch.clone(),
                    offset: d.offset,
                });
                self.unreported += 1;
                if self.unreported >= REPORT_EVERY {
                    self.report();
                }
            }
            SubscriptionItem::Gap { position, .. } => self.position = Some(position.clone()),
            SubscriptionItem::Ended(_) => self.ended = true,
            SubscriptionItem::Subscribed { .. } => {}
        }
        item
    }

    /// Tells the core how many events were read since the last report.
    fn report(&mut self) {
        let count = std::mem::take(&mut self.unreported);
        if count > 0 && !self.ended {
            let listener = self.listener;
            self.owner
                .shared
                .with(|st, now| st.core.handle_consumed(listener, count, now));
        }
    }

    /// The next event, skipping the other items; `None` when the subscription was closed by
    /// the application, `Some(Err)` when it was refused or the connection closed for good.
    pub async fn next_event(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            match self.next().await? {
                SubscriptionItem::Event(d) => return Some(Ok(d)),
                SubscriptionItem::Ended(Some(e)) => return Some(Err(e)),
                SubscriptionItem::Ended(None) => return None,
                _ => {}
            }
        }
    }

    /// Waits until the server confirmed the subscription (items that arrive meanwhile are
    /// kept for [`Subscription::next`]).
    pub async fn ready(&mut self) -> Result<StreamPosition, Error> {
        let mut seen = VecDeque::new();
        let result = loop {
            match self.rx.recv().await {
                Some(item @ SubscriptionItem::Subscribed { .. }) => {
                    let SubscriptionItem::Subscribed { position, .. } = &item else {
                        unreachable!()
                    };
                    let position = position.clone();
                    seen.push_back(item);
                    break Ok(position);
                }
                Some(SubscriptionItem::Ended(e)) => {
                    let err = e.clone().unwrap_or_else(|| UsageError::Closed.into());
                    seen.push_back(SubscriptionItem::Ended(e));
                    break Err(err);
                }
                Some(other) => seen.push_back(other),
                None => break Err(UsageError::Closed.into()),
            }
        };
        self.buffered.extend(seen);
        result
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.ended {
            let listener = self.listener;
            self.owner.shared.with(|st, now| {
                st.routes.remove(&listener);
                st.core.unsubscribe(listener, now);
            });
        }
    }
}

/// The subscribing side of a client: a handle on its one task. Cheap to clone.
#[derive(Clone)]
pub struct Subscriber {
    pub(crate) owner: Arc<Owner>,
    pub(crate) state: watch::Receiver<ConnState>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Adds a listener on `channel` (resuming after `since` when given); the first one
    /// connects. Subscribing to a channel again adds another listener that gets its events
    /// from the channel's current position on.
    ///
    /// Errors at once: an invalid channel name, a closed client, or `ALREADY_SUBSCRIBED`
    /// when the channel is subscribed and `since` is not its current position.
    pub fn subscribe(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<Subscription, Error> {
        let name = ChannelName::new(channel)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = self.owner.shared.with(|st, now| {
            let listener = st.core.subscribe(channel, since.clone(), now)?;
            // Registered under the same lock: the driver cannot route an item before this.
            st.routes.insert(listener, tx);
            Ok::<_, Error>(listener)
        })?;
        Ok(Subscription {
            channel: name,
            listener,
            rx,
            buffered: VecDeque::new(),
            owner: self.owner.clone(),
            position: since,
            unreported: 0,
            ended: false,
        })
    }

    /// The connection's state.
    pub fn state(&self) -> ConnState {
        *self.state.borrow()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<ConnState> {
        self.state.clone()
    }

    /// Closes the client (there is one for both halves: see [`crate::Client::close`]).
    pub async fn close(&self) {
        self.owner.close().await;
    }
}

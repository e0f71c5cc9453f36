//! Connection limits. The total is per instance (it protects this process's sockets); the
//! per-user limit is counted in a [`ConnectionStore`], so it holds across every instance
//! that shares one; the per-channel limit is counted by this instance's broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::ConnectionLimits;
use crate::store::{ConnectionStore, StoreError};

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// Counts open connections against the limits.
pub struct ConnectionRegistry {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
    store: Arc<dyn ConnectionStore>,
}

/// Holds one connection's place; dropping it frees the place.
pub struct ConnectionGuard {
    registry: Arc<ConnectionRegistry>,
    user: String,
}

/// Why a connection was not admitted.
#[derive(Debug)]
pub enum Refused {
    /// A limit is reached: `total` or `user`.
    Limit(&'static str),
    /// The shared store could not be asked.
    Store(StoreError),
}

impl ConnectionRegistry {
    /// A registry enforcing `limits` (0 = unlimited), counting users in `store`.
    pub fn new(limits: ConnectionLimits, store: Arc<dyn ConnectionStore>) -> Self {
        Self {
            limits,
            counts: Mutex::new(Counts::default()),
            store,
        }
    }

    /// Takes a place for `user`, or says which limit is reached (`total` or `user`).
    pub async fn acquire(self: &Arc<Self>, user: &str) -> Result<ConnectionGuard, Refused> {
        {
            let mut c = self.counts.lock().expect("connection lock");
            if self.limits.max_total > 0 && c.total >= self.limits.max_total {
                return Err(Refused::Limit("total"));
            }
            // Reserve the place before asking the store, so concurrent connects cannot
            // overshoot the total.
            c.total += 1;
        }
        let admitted = self.store.acquire(user, self.limits.max_per_user).await;
        let mut c = self.counts.lock().expect("connection lock");
        match admitted {
            Ok(true) => {
                *c.per_user.entry(user.to_owned()).or_default() += 1;
                Ok(ConnectionGuard {
                    registry: self.clone(),
                    user: user.to_owned(),
                })
            }
            Ok(false) => {
                c.total -= 1;
                Err(Refused::Limit("user"))
            }
            Err(e) => {
                c.total -= 1;
                Err(Refused::Store(e))
            }
        }
    }

    /// Open connections on this instance.
    pub fn total(&self) -> usize {
        self.counts.lock().expect("connection lock").total
    }

    /// Distinct users connected to this instance.
    pub fn users(&self) -> usize {
        self.counts.lock().expect("connection lock").per_user.len()
    }

    /// The per-channel limit (0 = unlimited).
    pub fn max_per_channel(&self) -> usize {
        self.limits.max_per_channel
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        {
            let mut c = self.registry.counts.lock().expect("connection lock");
            c.total = c.total.saturating_sub(1);
            if let Some(n) = c.per_user.get_mut(&self.user) {
                *n -= 1;
                if *n == 0 {
                    c.per_user.remove(&self.user);
                }
            }
        }
        self.registry.store.release(&self.user);
    }
}

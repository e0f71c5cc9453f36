//! Connection limits: total and per user (per channel is counted by the broker).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::ConnectionLimits;

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
}

/// Counts open connections against the limits.
pub struct ConnectionRegistry {
    limits: ConnectionLimits,
    counts: Mutex<Counts>,
}

/// Holds one connection's place; dropping it frees the place.
pub struct ConnectionGuard {
    registry: Arc<ConnectionRegistry>,
    user: String,
}

impl ConnectionRegistry {
    /// A registry enforcing `limits` (0 = unlimited).
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Takes a place for `user`, or names the limit that is reached (`total` or `user`).
    pub fn acquire(self: &Arc<Self>, user: &str) -> Result<ConnectionGuard, &'static str> {
        let mut c = self.counts.lock().expect("connection lock");
        if self.limits.max_total > 0 && c.total >= self.limits.max_total {
            return Err("total");
        }
        let mine = c.per_user.get(user).copied().unwrap_or(0);
        if self.limits.max_per_user > 0 && mine >= self.limits.max_per_user {
            return Err("user");
        }
        c.total += 1;
        *c.per_user.entry(user.to_owned()).or_default() += 1;
        Ok(ConnectionGuard {
            registry: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Open connections.
    pub fn total(&self) -> usize {
        self.counts.lock().expect("connection lock").total
    }

    /// Distinct users connected.
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
        let mut c = self.registry.counts.lock().expect("connection lock");
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(&self.user);
            }
        }
    }
}

//! The close-code table: what a client does when its WebSocket closes with a given code.
//!
//! Every SDK obeys this one table (see `docs/protocol.md`). Standard codes come from
//! RFC 6455 and the IANA registry; 4000–4999 are Courier's own.

use serde::{Deserialize, Serialize};

/// Normal closure: the side that closes is done.
pub const NORMAL: u16 = 1000;
/// The server is going away (shutdown, redeploy).
pub const GOING_AWAY: u16 = 1001;
/// No close frame was received (the connection dropped).
pub const ABNORMAL: u16 = 1006;
/// Policy violation with no way forward (e.g. a connection limit).
pub const POLICY_VIOLATION: u16 = 1008;
/// A frame was too large.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The server hit an unexpected condition.
pub const INTERNAL_ERROR: u16 = 1011;
/// The server is restarting.
pub const SERVICE_RESTART: u16 = 1012;
/// Try again later (overload).
pub const TRY_AGAIN_LATER: u16 = 1013;
/// The client sent something that is not protocol v1.
pub const BAD_REQUEST: u16 = 4000;
/// The token was missing or invalid.
pub const UNAUTHORIZED: u16 = 4001;
/// The token expired: refresh it, then reconnect.
pub const TOKEN_EXPIRED: u16 = 4002;
/// No `connect` frame within the deadline.
pub const AUTH_TIMEOUT: u16 = 4004;
/// The client read too slowly; reconnect and resume from history.
pub const SLOW_CONSUMER: u16 = 4008;
/// The client was rate limited; reconnect after the announced delay.
pub const RATE_LIMITED: u16 = 4029;
/// The client sent no `pong` in time (the server's heartbeat check).
pub const HEARTBEAT_TIMEOUT: u16 = 4030;

/// What a client does after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseAction {
    /// Reconnect after the usual backoff delay.
    Reconnect,
    /// Get a new token from the provider, then reconnect.
    RefreshTokenThenReconnect,
    /// Stop: reconnecting cannot help. The application is told why.
    Terminal,
}

/// Classifies a close code. Unknown codes reconnect with backoff, so a new server code never
/// leaves a client stranded; the codes that must not reconnect are listed explicitly.
pub fn classify_close(code: u16) -> CloseAction {
    match code {
        TOKEN_EXPIRED => CloseAction::RefreshTokenThenReconnect,
        POLICY_VIOLATION | MESSAGE_TOO_BIG | BAD_REQUEST | UNAUTHORIZED | 1002 | 1003 | 1007
        | 1010 => CloseAction::Terminal,
        _ => CloseAction::Reconnect,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(classify_close(GOING_AWAY), CloseAction::Reconnect);
        assert_eq!(classify_close(ABNORMAL), CloseAction::Reconnect);
        assert_eq!(
            classify_close(TOKEN_EXPIRED),
            CloseAction::RefreshTokenThenReconnect
        );
        assert_eq!(classify_close(POLICY_VIOLATION), CloseAction::Terminal);
        assert_eq!(classify_close(4999), CloseAction::Reconnect);
    }
}

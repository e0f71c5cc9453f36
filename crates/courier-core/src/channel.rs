//! Channel names and the patterns that grant access to them.
//!
//! Grammar (documented in `docs/protocol.md`):
//!
//! ```text
//! channel  = segment *( "." segment )        ; at most 255 bytes in all
//! segment  = 1*64( ALPHA / DIGIT / "_" / "-" / ":" / "@" )
//! pattern  = pseg *( "." pseg )
//! pseg     = segment / "*" / "**"             ; "**" only as the last segment
//! ```
//!
//! `*` matches exactly one segment, a final `**` matches one or more segments.
//! Well-known channels: `global`, `user.{user_id}`, `strategy.{id}`, `backtest.{id}`,
//! `forge.job.{id}`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ValidationError, ValidationKind};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;
/// Longest segment of a channel name, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;

/// A validated channel name such as `backtest.abc` or `user.42`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
pub struct ChannelName(String);

fn segment_ok(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= MAX_SEGMENT_LEN
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@'))
}

/// Which bytes may appear in a segment (`ALPHA / DIGIT / "_" / "-" / ":" / "@"`).
const SEGMENT_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b':' | b'@');
        b += 1;
    }
    t
};

/// The channel grammar in one pass: 1 to 255 bytes, segments of 1 to 64 segment bytes
/// separated by single dots. Agrees with [`ChannelName::check`]'s detailed checks.
#[inline]
fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > MAX_CHANNEL_LEN {
        return false;
    }
    let mut segment = 0usize;
    for &c in b {
        if c == b'.' {
            if segment == 0 {
                return false;
            }
            segment = 0;
        } else if SEGMENT_BYTE[usize::from(c)] && segment < MAX_SEGMENT_LEN {
            segment += 1;
        } else {
            return false;
        }
    }
    segment > 0
}

fn channel_error(field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::new(field, ValidationKind::BadFormat, message)
}

impl ChannelName {
    /// Validates `name` against the channel grammar.
    pub fn new(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        Self::check(&name, "channel")?;
        Ok(Self(name))
    }

    fn check(name: &str, field: &str) -> Result<(), ValidationError> {
        // Every event's channel is checked: valid names in one pass over the bytes; the
        // checks below only run to say what is wrong.
        if is_valid_name(name) {
            return Ok(());
        }
        if name.is_empty() {
            return Err(ValidationError::new(
                field,
                ValidationKind::Missing,
                "a channel name is required, e.g. `backtest.abc`",
            ));
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ValidationError::new(
                field,
                ValidationKind::TooLong,
                format!(
                    "channel names are at most {MAX_CHANNEL_LEN} bytes, got {}",
                    name.len()
                ),
            ));
        }
        if let Some(bad) = name.split('.').find(|s| !segment_ok(s)) {
            return Err(channel_error(
                field,
                format!(
                    "segment `{bad}` of `{name}` is not valid: segments are 1 to {MAX_SEGMENT_LEN} characters of letters, digits, `_`, `-`, `:`, `@`, separated by single dots"
                ),
            ));
        }
        Ok(())
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The dot-separated segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// The user id of a `user.{id}` channel.
    pub fn user_id(&self) -> Option<&str> {
        self.0
            .strip_prefix("user.")
            .filter(|rest| !rest.contains('.'))
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        ChannelName::new(name).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lets maps keyed by channel be searched with a `&str` (the derived `Ord` is the `String`'s,
/// so both orders agree).
impl std::borrow::Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ChannelName {
    type Error = ValidationError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        ChannelName::new(value)
    }
}

/// A channel pattern granted by a token, such as `backtest.*` or `strategy.**`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ChannelPattern(String);

impl ChannelPattern {
    /// Validates `pattern` against the pattern grammar.
    pub fn new(pattern: impl Into<String>) -> Result<Self, ValidationError> {
        let pattern = pattern.into();
        if pattern.is_empty() || pattern.len() > MAX_CHANNEL_LEN {
            return Err(channel_error(
                "channels",
                "a channel pattern is 1 to 255 bytes, e.g. `backtest.*`",
            ));
        }
        let segments: Vec<&str> = pattern.split('.').collect();
        for (i, segment) in segments.iter().enumerate() {
            let ok = match *segment {
                "*" => true,
                "**" => i + 1 == segments.len(),
                s => segment_ok(s),
            };
            if !ok {
                return Err(channel_error(
                    "channels",
                    format!(
                        "pattern `{pattern}` is not valid: use channel segments, `*` for one segment, and `**` only at the end"
                    ),
                ));
            }
        }
        Ok(Self(pattern))
    }

    /// Whether `channel` matches this pattern.
    pub fn matches(&self, channel: &ChannelName) -> bool {
        let mut names = channel.segments();
        for pat in self.0.split('.') {
            match pat {
                "**" => return names.next().is_some(),
                "*" => {
                    if names.next().is_none() {
                        return false;
                    }
                }
                literal => {
                    if names.next() != Some(literal) {
                        return false;
                    }
                }
            }
        }
        names.next().is_none()
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pattern = String::deserialize(deserializer)?;
        ChannelPattern::new(pattern).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for ok in [
            "global",
            "user.42",
            "backtest.abc-1",
            "forge.job.x_y",
            "a:b@c",
        ] {
            assert!(ChannelName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "ä",
            &"x".repeat(65),
            &"a.".repeat(130),
        ] {
            assert!(ChannelName::new(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// The one-pass check agrees with the segment-by-segment one.
        #[test]
        fn one_pass_check_agrees(name in "[a-zA-Z0-9_:@. \u{e4}-]{0,70}|([ab.]{0,3}x{60,66}){1,5}") {
            let slow = !name.is_empty()
                && name.len() <= MAX_CHANNEL_LEN
                && name.split('.').all(segment_ok);
            proptest::prop_assert_eq!(is_valid_name(&name), slow);
            proptest::prop_assert_eq!(ChannelName::new(name.as_str()).is_ok(), slow);
        }
    }

    #[test]
    fn one_pass_check_edges() {
        for (name, ok) in [
            ("a", true),
            (".", false),
            ("a.b.", false),
            ("\u{7f}", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
            (&format!("{}.{}", "x".repeat(64), "y".repeat(64)), true),
            (&vec!["x".repeat(63); 4].join("."), true),
            (
                &vec!["x".repeat(63); 4].join(".").replace("x.x", "xx.x"),
                false,
            ),
            (&format!("{}a", vec!["x".repeat(63); 4].join(".")), false),
        ] {
            assert_eq!(is_valid_name(name), ok, "{name}");
            assert_eq!(ChannelName::new(name).is_ok(), ok, "{name}");
        }
    }

    #[test]
    fn patterns() {
        let ch = |s: &str| ChannelName::new(s).unwrap();
        let p = |s: &str| ChannelPattern::new(s).unwrap();
        assert!(p("backtest.*").matches(&ch("backtest.a")));
        assert!(!p("backtest.*").matches(&ch("backtest.a.b")));
        assert!(!p("backtest.*").matches(&ch("backtest")));
        assert!(p("forge.**").matches(&ch("forge.job.1")));
        assert!(!p("forge.**").matches(&ch("forge")));
        assert!(p("global").matches(&ch("global")));
        assert!(ChannelPattern::new("a.**.b").is_err());
        assert_eq!(ch("user.42").user_id(), Some("42"));
        assert_eq!(ch("user.42.x").user_id(), None);
    }
}

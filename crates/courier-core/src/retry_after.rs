//! `Retry-After` parsing (RFC 9110 §10.2.3), turned into a delay before it leaves the core.
//!
//! Accepted forms, after trimming surrounding whitespace:
//!
//! - delay-seconds: ASCII digits (`"120"`, `"0"`). Values too large for any clock are
//!   still valid and end up at the cap.
//! - a decimal number of seconds: `DIGITS.DIGITS` or `.DIGITS` (`"1.5"`, `".25"`; `"1."`
//!   is malformed). RFC 9110 only allows integers, but some servers send fractions, and
//!   honouring them costs nothing. The result is rounded **up** to a whole millisecond so a
//!   client never sends early.
//!   No sign, no exponent: `"-1"`, `"+1"`, `"1e3"` are malformed.
//! - an HTTP-date in any of the three formats of RFC 9110 §5.6.7 (parsed by `httpdate`).
//!   A date at or before `wall_now` gives [`Duration::ZERO`]; a later one gives the
//!   difference, rounded up to a whole millisecond.
//!
//! Every result is capped at `cap`. Anything else (empty, garbage, an impossible date)
//! gives `None`: the header is ignored and the caller falls back to its own backoff.

use crate::time::{Duration, SystemTime};

/// The cap used when the caller has no better one: five minutes.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// Parses a `Retry-After` value into a delay from `wall_now`, capped at `cap`;
/// `None` when the value is malformed (see the module docs for the accepted forms).
pub fn parse_retry_after(value: &str, wall_now: SystemTime, cap: Duration) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Some(delay) = parse_seconds(value) {
        return Some(delay.min(cap));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let delay = date.duration_since(wall_now).unwrap_or(Duration::ZERO);
    Some(ceil_to_millis(delay).min(cap))
}

/// Parses `DIGITS`, `DIGITS.DIGITS` or `.DIGITS` seconds into a whole-millisecond delay,
/// rounding fractions of a millisecond up and saturating far beyond any sensible cap.
/// `None` when `s` has any other shape. Shared with the rate-limit header parser.
pub(crate) fn parse_seconds(s: &str) -> Option<Duration> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (s, None),
    };
    let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || (int.is_empty() && frac.is_none_or(str::is_empty)) {
        return None;
    }
    if let Some(f) = frac {
        if f.is_empty() || !all_digits(f) {
            return None;
        }
    }
    // Saturate the whole seconds: "99999999999999999999999" is a valid, huge delay.
    let mut secs: u64 = 0;
    for b in int.bytes() {
        secs = secs.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    let mut millis: u64 = 0;
    let mut round_up = false;
    for (i, b) in frac.unwrap_or("").bytes().enumerate() {
        let digit = u64::from(b - b'0');
        if i < 3 {
            millis = millis * 10 + digit;
        } else if digit != 0 {
            round_up = true;
        }
    }
    let digits = frac.map_or(0, str::len);
    for _ in digits..3 {
        millis *= 10;
    }
    if round_up {
        millis += 1;
    }
    let total = secs.saturating_mul(1000).saturating_add(millis);
    Some(Duration::from_millis(total))
}

/// Rounds a duration up to the next whole millisecond.
pub(crate) fn ceil_to_millis(d: Duration) -> Duration {
    let sub = d.subsec_nanos() % 1_000_000;
    if sub == 0 {
        d
    } else {
        d.saturating_add(Duration::from_nanos(u64::from(1_000_000 - sub)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::UNIX_EPOCH;

    // 2015-10-21T07:28:00Z, the date in RFC 9110's examples.
    const NOW_SECS: u64 = 1_445_412_480;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    fn parse(v: &str) -> Option<u64> {
        parse_retry_after(v, now(), DEFAULT_RETRY_AFTER_CAP).map(|d| d.as_millis() as u64)
    }

    #[test]
    fn delay_seconds() {
        assert_eq!(parse("120"), Some(120_000));
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("  7\t"), Some(7_000));
        assert_eq!(parse("007"), Some(7_000));
        assert_eq!(parse("301"), Some(300_000));
        assert_eq!(parse("99999999999999999999999999"), Some(300_000));
    }

    #[test]
    fn decimals_round_up() {
        assert_eq!(parse("1.5"), Some(1_500));
        assert_eq!(parse(".25"), Some(250));
        assert_eq!(parse("0.0001"), Some(1));
        assert_eq!(parse("2.0000"), Some(2_000));
        assert_eq!(parse("2.1234"), Some(2_124));
        for bad in [
            "1.", ".", "1.2.3", "1,5", "-1", "+1", "1e3", "", "   ", "soon", "1 2",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:30 GMT"), Some(30_000));
        assert_eq!(parse("Wed, 21 Oct 2015 07:27:00 GMT"), Some(0));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
        assert_eq!(parse("Wednesday, 21-Oct-15 07:28:10 GMT"), Some(10_000));
        assert_eq!(parse("Wed Oct 21 07:28:05 2015"), Some(5_000));
        assert_eq!(parse("Thu, 22 Oct 2015 07:28:00 GMT"), Some(300_000));
        assert_eq!(parse("Wed, 32 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00"), None);
    }

    #[test]
    fn sub_millisecond_wall_clock_rounds_up() {
        let now = now() + Duration::from_micros(300);
        let d = parse_retry_after("Wed, 21 Oct 2015 07:28:01 GMT", now, Duration::MAX).unwrap();
        assert_eq!(d, Duration::from_millis(1_000));
        let d = parse_retry_after(
            "Wed, 21 Oct 2015 07:28:01 GMT",
            now,
            Duration::from_millis(3),
        );
        assert_eq!(d, Some(Duration::from_millis(3)));
    }
}

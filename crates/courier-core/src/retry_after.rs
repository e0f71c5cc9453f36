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
//! - an HTTP-date in any of the three formats of RFC 9110 §5.6.7: IMF-fixdate
//!   (`Sun, 06 Nov 1994 08:49:37 GMT`) and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37
//!   GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) forms, which recipients MUST accept
//!   ([`parse_http_date`], a few lines here instead of the `httpdate` crate: ~3 KB less
//!   WASM; a test compares the two). A date at or before `wall_now` gives
//!   [`Duration::ZERO`]; a later one gives the difference, rounded up to a whole millisecond.
//!
//! Every result is capped at `cap`. Anything else (empty, garbage, an impossible date)
//! gives `None`: the header is ignored and the caller falls back to its own backoff.

use crate::time::{Duration, SystemTime, UNIX_EPOCH};

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
    let date = parse_http_date(value)?;
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

/// Parses an HTTP-date (RFC 9110 §5.6.7) in any of its three formats, as the `httpdate`
/// crate does (tests compare them; it also trims whitespace, which [`parse_retry_after`]
/// does before, and it misses a wrong byte before the RFC 850 form's time): names are case-sensitive, the date must be
/// a real one (day within its month, the right weekday), from 1970 to 9999, in GMT. The RFC
/// 850 form's two-digit year means 20YY below 70 and 19YY from 70 (RFC 9110's rule, "more
/// than 50 years in the future means the past century", picks the same year until 2050).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    const DAYS: [&[u8]; 7] = [
        b"Monday",
        b"Tuesday",
        b"Wednesday",
        b"Thursday",
        b"Friday",
        b"Saturday",
        b"Sunday",
    ];
    const MONTHS: &[u8; 36] = b"JanFebMarAprMayJunJulAugSepOctNovDec";
    let b = s.as_bytes();
    let short_day = |name: &[u8]| DAYS.iter().position(|d| d[..3] == *name);
    let month = |name: &[u8]| MONTHS.chunks(3).position(|m| m == name);
    // (weekday 0 = Monday, day, month 0-based, year, "hh:mm:ss")
    let (wday, day, mon, year, time) = match b.len() {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
        29 => {
            if b[3..5] != *b", " || b[7] != b' ' || b[11] != b' ' || b[16] != b' ' {
                return None;
            }
            if b[25..] != *b" GMT" {
                return None;
            }
            let year = digits(&b[12..16])?;
            (
                short_day(&b[..3])?,
                digits(&b[5..7])?,
                month(&b[8..11])?,
                year,
                &b[17..25],
            )
        }
        // asctime: `Sun Nov  6 08:49:37 1994` (the day may also be `06`)
        24 => {
            if b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
                return None;
            }
            let day = if b[8] == b' ' { &b[9..10] } else { &b[8..10] };
            let year = digits(&b[20..24])?;
            (
                short_day(&b[..3])?,
                digits(day)?,
                month(&b[4..7])?,
                year,
                &b[11..19],
            )
        }
        // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
        _ => {
            let (name, rest) = s.split_once(", ")?;
            let rest = rest.as_bytes();
            if rest.len() != 22 || rest[2] != b'-' || rest[6] != b'-' || rest[9] != b' ' {
                return None;
            }
            if rest[18..] != *b" GMT" {
                return None;
            }
            let wday = DAYS.iter().position(|d| *d == name.as_bytes())?;
            let yy = digits(&rest[7..9])?;
            let year = yy + if yy < 70 { 2000 } else { 1900 };
            (
                wday,
                digits(&rest[..2])?,
                month(&rest[3..6])?,
                year,
                &rest[10..18],
            )
        }
    };
    if time[2] != b':' || time[5] != b':' {
        return None;
    }
    let (hour, min, sec) = (
        digits(&time[..2])?,
        digits(&time[3..5])?,
        digits(&time[6..])?,
    );
    if hour > 23 || min > 59 || sec > 59 || !(1970..=9999).contains(&year) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_len = [
        31,
        28 + u64::from(leap),
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day == 0 || day > month_len[mon] {
        return None;
    }
    // Days since 1970-01-01: whole years (with the leap days before `year`), then months.
    let leap_days = |y: u64| y / 4 - y / 100 + y / 400;
    let days = (year - 1970) * 365 + leap_days(year - 1) - leap_days(1969)
        + month_len[..mon].iter().sum::<u64>()
        + day
        - 1;
    // 1970-01-01 was a Thursday (3 with Monday as 0).
    if (days + 3) % 7 != wday as u64 {
        return None;
    }
    let secs = days * 86_400 + hour * 3_600 + min * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// ASCII digits (one to four) as a number; `None` for anything else.
fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
    })
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

    #[test]
    fn http_date_forms_and_edges() {
        let at =
            |s: &str| parse_http_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(at("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(at("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(at("Sun Nov 06 08:49:37 1994"), Some(784_111_777));
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(at("Fri, 31 Dec 9999 23:59:59 GMT"), Some(253_402_300_799));
        assert_eq!(at("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
        assert_eq!(at("Thursday, 01-Jan-70 00:00:00 GMT"), Some(0));
        assert_eq!(at("Tuesday, 01-Jan-69 00:00:00 GMT"), Some(3_124_224_000));
        for bad in [
            "Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            "sun, 06 Nov 1994 08:49:37 GMT", // names are case-sensitive
            "Sun, 06 nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:60 GMT", // no leap seconds
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Mon, 29 Feb 1900 00:00:00 GMT", // not a leap year
            "Sun, 30 Feb 2000 00:00:00 GMT",
            "Wed, 31 Dec 1969 23:59:59 GMT", // before 1970
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08-49-37 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 6-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Sun Nov 6 08:49:37 1994",
            "Sün, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
            assert!(httpdate::parse_http_date(bad).is_err(), "{bad:?}");
        }
    }

    /// The three forms of many instants from 1970 to 9999, against the `httpdate` crate
    /// (which formats the IMF-fixdate; the other two forms are rebuilt from it).
    #[test]
    fn http_dates_match_httpdate_on_many_instants() {
        const MAX: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        const DAYS: [&str; 7] = [
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut instants: Vec<u64> = (0..2_000).map(|d| d * 86_400 * 7 + d).collect();
        instants.extend([0, 1, 86_399, 86_400, 951_782_400, 951_868_799, MAX]);
        for _ in 0..100_000 {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            instants.push(x.wrapping_mul(0x2545_F491_4F6C_DD1D) % (MAX + 1));
        }
        for secs in instants {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            let imf = httpdate::fmt_http_date(t);
            let (wd, day, mon, year, time) = (
                &imf[..3],
                &imf[5..7],
                &imf[8..11],
                &imf[12..16],
                &imf[17..25],
            );
            let long = DAYS.iter().find(|d| d.starts_with(wd)).unwrap();
            let mut forms = vec![imf.clone()];
            let asc_day = day
                .strip_prefix('0')
                .map_or(day.to_owned(), |d| format!(" {d}"));
            forms.push(format!("{wd} {mon} {asc_day} {time} {year}"));
            forms.push(format!("{wd} {mon} {day} {time} {year}"));
            if (1970..2070).contains(&year.parse::<u32>().unwrap()) {
                forms.push(format!("{long}, {day}-{mon}-{} {time} GMT", &year[2..]));
            }
            for form in forms {
                assert_eq!(parse_http_date(&form), Some(t), "{form:?}");
                assert_eq!(httpdate::parse_http_date(&form).ok(), Some(t), "{form:?}");
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Strings shaped like the three forms with any fields, valid or not, and the same
        /// with one byte changed.
        fn date_like() -> impl Strategy<Value = String> {
            let names = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun|Xyz|mon)";
            let long = "(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday|Sun)";
            let months = "(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec|Foo|jan)";
            let d = "[0-9]";
            let time = format!("[0-2]{d}:[0-6]{d}:[0-6]{d}");
            let re = |r: String| proptest::string::string_regex(&r).unwrap();
            let forms = prop_oneof![
                re(format!(
                    "{names}, [0-3]{d} {months} (19[6-9]|20[0-9]|99[0-9]|[0-9]{{2}}){d} {time} GMT"
                )),
                re(format!("{long}, [0-3]{d}-{months}-{d}{d} {time} GMT")),
                re(format!(
                    "{names} {months} [ 0-3]{d} {time} (19[6-9]|20[0-9]|[0-9]{{2}}){d}"
                )),
            ];
            (
                forms,
                any::<prop::sample::Index>(),
                any::<u8>(),
                any::<bool>(),
            )
                .prop_map(|(s, i, byte, mutate)| {
                    if !mutate {
                        return s;
                    }
                    let mut b = s.into_bytes();
                    let i = i.index(b.len());
                    b[i] = byte % 128;
                    String::from_utf8(b).unwrap()
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(20_000))]

            #[test]
            fn http_dates_match_httpdate(s in date_like()) {
                let ours = parse_http_date(&s);
                // One known difference: `httpdate` does not check the space between the
                // year and the time of the RFC 850 form (`Sunday, 06-Nov-94x08:49:37 GMT`);
                // this parser refuses anything but a space there.
                let lax = s.split_once(", ").is_some_and(|(name, rest)| {
                    name.len() > 3 && rest.len() == 22 && rest.as_bytes()[9] != b' '
                });
                if lax {
                    prop_assert_eq!(ours, None, "{:?}", s);
                } else {
                    prop_assert_eq!(ours, httpdate::parse_http_date(&s).ok(), "{:?}", s);
                }
            }
        }
    }
}

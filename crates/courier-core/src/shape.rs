//! Table-driven validation of JSON data (the tables are in every build; `validate` needs
//! the `publish` feature): a static table of fields ([`Field`]: name, [`Kind`],
//! required or not) is walked over the data's text with the core's own JSON reader
//! ([`crate::json::Reader`]), with no serde and no tree. This is how the catalogue's event
//! data is checked (the tables come from the catalogue's declaration in
//! [`crate::event`]), the same way in every build, the WASM one included.
//!
//! One pass, with the errors in the order serde's derive and the checks after it gave them
//! (a test compares the two on generated data):
//! 1. Shape errors stop the walk where they are met, in document order: JSON types, enum
//!    values, integers and numbers that fit, duplicate fields; an object's missing required
//!    fields when it ends.
//! 2. Content errors (blank names, decimal grammar, positive decimals, ranges) are kept, the
//!    first in declaration order winning, and reported only if the shape is right.
//!
//! Deliberate difference from the serde path: a free-form field ([`Kind::Any`]) takes any
//! JSON, where `serde_json::Value` refused numbers beyond `f64` (`1e400`).
//!
//! Numbers are never converted to `f64` (float parsing and formatting would cost ~13 KB of
//! WASM): a range is checked by comparing the number's decimal text exactly with the limits
//! of the values that round to the range (see [`Range`]), so the answer is the one an `f64`
//! comparison gives after correct rounding, as in JavaScript and Python.

#[cfg(feature = "publish")]
use std::cmp::Ordering;

#[cfg(feature = "publish")]
use crate::error::{ValidationError, ValidationKind};
#[cfg(feature = "publish")]
use crate::json::{JsonError, Reader, u64_text};

/// Longest name or id (a [`Kind::Name`] value), in bytes.
#[cfg(feature = "publish")]
const MAX_NAME_LEN: usize = 128;
/// Longest decimal string, in bytes.
#[cfg(feature = "publish")]
const MAX_DECIMAL_LEN: usize = 64;
/// The smallest magnitude that overflows an `f64` (it rounds to infinity): 2^1024 − 2^970,
/// halfway between `f64::MAX` and 2^1024 (the tie rounds up, to the even mantissa).
#[cfg(feature = "publish")]
const F64_OVERFLOW: &str = "1.79769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792e308";

/// What a field holds, and what is checked about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Any string.
    Str,
    /// A name or id: a string that is not blank (`missing` otherwise), at most 128 bytes.
    Name,
    /// An exact decimal as a string (`"101.25"`, `"-3"`), at most 64 bytes; with `positive`,
    /// greater than zero.
    Decimal {
        /// Whether it must be greater than zero.
        positive: bool,
    },
    /// A JSON number within `f64`'s range; within the [`Range`] when there is one.
    Number(Option<&'static Range>),
    /// A non-negative integer that fits in a `u64` (no fraction, no exponent).
    UInt,
    /// `true` or `false`.
    Bool,
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// Any JSON value, `null` included.
    Any,
    /// An array whose items are all of this kind.
    Array(&'static Kind),
    /// An object with these fields (others are ignored).
    Object(&'static [Field]),
}

/// One field of an object's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The member name.
    pub name: &'static str,
    /// What it holds.
    pub kind: &'static Kind,
    /// Whether it must be present and not `null`; an optional field may be absent or `null`.
    pub required: bool,
}

/// An inclusive range of numbers: `message` says it (`@` is the field, `$` the number);
/// `lowest` and `highest`, as decimal texts, are the exact limits of the numbers that round (to the nearest
/// `f64`, ties to even) into the range, which is what is checked. A test checks each
/// range's limits against Rust's correctly rounded float parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The message when a number is outside, e.g. "`@` is $; it must be between 0 and 100".
    pub message: &'static str,
    /// The smallest number text that still rounds to `min` or above.
    pub lowest: &'static str,
    /// The largest number text that still rounds to `max` or below.
    pub highest: &'static str,
}

/// 0 to 100 (percentages).
pub const PERCENT: Range = Range {
    message: "`@` is $; it must be between 0 and 100",
    // −2^−1075: the negative numbers down to it round to −0.0, which is in range.
    lowest: "-2.4703282292062327208828439643411068618252990130716238221279284125033775363510437593264991818081799618989828234772285886546332835517796989819938739800539093906315035659515570226392290858392449105184435931802849936536152500319370457678249219365623669863658480757001585769269903706311928279558551332927834338409351978015531246597263579574622766465272827220056374006485499977096599470454020828166226237857393450736339007967761930577506740176324673600968951340535537458516661134223766678604162159680461914467291840300530057530849048765391711386591646239524912623653881879636239373280423891018672348497668235089863388587925628302755995657524455507255189313690836254779186948667994968324049705821028513185451396213837722826145437693412532098591327667236328125e-324",
    // 100 + 2^−47, halfway to the next `f64` above 100: the tie rounds to 100 (even).
    highest: "100.00000000000000710542735760100185871124267578125",
};

/// Checks `data` (one JSON value, already checked to be JSON) against the object table
/// `fields`; errors name the field as a path under `data` (`data.percent`,
/// `data.symbols[2]`) and say which `event_type` the data belongs to.
#[cfg(feature = "publish")]
pub fn validate(
    data: &str,
    fields: &'static [Field],
    event_type: &str,
) -> Result<(), ValidationError> {
    let mut walk = Walk {
        path: String::from("data"),
        rank: Vec::new(),
        event_type,
        error: None,
        later: None,
    };
    let result = walk.value(&mut Reader::new(data), &Kind::Object(fields), false);
    match (result, walk.error, walk.later) {
        (Err(_), Some(error), _) => Err(error),
        (Err(e), None, _) => Err(ValidationError::new(
            "data",
            ValidationKind::BadFormat,
            format!("data is not valid JSON: {e}"),
        )),
        (Ok(()), _, Some((_, error))) => Err(error),
        (Ok(()), _, None) => Ok(()),
    }
}

/// One walk over the data, in one pass. Shape errors stop it at once (document order, as
/// serde's derive found them); content errors wait in `later`, where the one first in
/// declaration order (`rank`: the field and item indices along the path) stays, and are
/// reported only when the shape is right (as the checks that ran after deserialising were).
#[cfg(feature = "publish")]
struct Walk<'t> {
    path: String,
    rank: Vec<u32>,
    event_type: &'t str,
    /// The shape error (the reader's callbacks can only return a [`JsonError`]).
    error: Option<ValidationError>,
    later: Option<(Vec<u32>, ValidationError)>,
}

#[cfg(feature = "publish")]
impl Walk<'_> {
    /// The error at the current path, its message from `template`: `@` stands for the
    /// field (its path under `data`: `percent`, `symbols[2]`), `%` for the event type, `$`
    /// and `&` for `a` and `b` (only the template is scanned, never the values). One static
    /// text per message instead of `format!` at each site keeps the WASM smaller.
    fn error(&self, kind: ValidationKind, template: &str, a: &str, b: &str) -> ValidationError {
        let name = self.path.strip_prefix("data.").unwrap_or(&self.path);
        let mut message = String::new();
        for c in template.chars() {
            match c {
                '@' => message.push_str(name),
                '%' => message.push_str(self.event_type),
                '$' => message.push_str(a),
                '&' => message.push_str(b),
                c => message.push(c),
            }
        }
        ValidationError::new(self.path.clone(), kind, message)
    }

    /// A shape error: recorded, and the reader stops.
    fn fail(&mut self, kind: ValidationKind, template: &str, a: &str, b: &str) -> JsonError {
        self.error = Some(self.error(kind, template, a, b));
        JsonError {
            what: "".into(),
            at: 0,
        }
    }

    /// A content error: kept if it comes first in declaration order; the walk goes on.
    fn later(&mut self, kind: ValidationKind, template: &str, a: &str) {
        if self
            .later
            .as_ref()
            .is_none_or(|(rank, _)| self.rank < *rank)
        {
            self.later = Some((self.rank.clone(), self.error(kind, template, a, "")));
        }
    }

    fn wrong_type(&mut self, found: Option<u8>, expected: &str) -> JsonError {
        let found = match found {
            Some(b'"') => "a string",
            Some(b'{') => "an object",
            Some(b'[') => "an array",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        self.fail(
            ValidationKind::WrongType,
            "`@` must be $, not & (in `%` data)",
            expected,
            found,
        )
    }

    /// Reads a member or item: `steps` (`.key`, or `[`, index, `]`) added to the path and
    /// `index` to the rank.
    fn at(
        &mut self,
        steps: &[&str],
        index: u32,
        r: &mut Reader<'_>,
        kind: &Kind,
        nullable: bool,
    ) -> Result<(), JsonError> {
        let len = self.path.len();
        for s in steps {
            self.path.push_str(s);
        }
        self.rank.push(index);
        let out = self.value(r, kind, nullable);
        self.path.truncate(len);
        self.rank.pop();
        out
    }

    /// Reads one value of `kind` (`null` allowed when `nullable`).
    fn value(&mut self, r: &mut Reader<'_>, kind: &Kind, nullable: bool) -> Result<(), JsonError> {
        if let Kind::Any = kind {
            return r.skip_value().map(drop);
        }
        if nullable && r.null() {
            return Ok(());
        }
        let found = r.peek();
        match *kind {
            Kind::Str | Kind::Name | Kind::Decimal { .. } | Kind::Enum(_) => {
                if found != Some(b'"') {
                    return Err(self.wrong_type(found, "a string"));
                }
                let value = r.string()?;
                match *kind {
                    Kind::Enum(names) if !names.contains(&&*value) => {
                        let mut list = String::new();
                        for (i, n) in names.iter().enumerate() {
                            list.push_str(if i == 0 { "`" } else { "`, `" });
                            list.push_str(n);
                        }
                        return Err(self.fail(
                            ValidationKind::WrongType,
                            "`@` is `$`; it must be one of &` (in `%` data)",
                            &value,
                            &list,
                        ));
                    }
                    Kind::Name if value.trim().is_empty() => {
                        self.later(ValidationKind::Missing, "`@` must not be empty", "");
                    }
                    Kind::Name if value.len() > MAX_NAME_LEN => {
                        let len = u64_text(value.len() as u64);
                        self.later(
                            ValidationKind::TooLong,
                            "`data.@` is $ bytes; at most 128",
                            &len,
                        );
                    }
                    Kind::Decimal { .. } if !is_decimal(&value) => {
                        self.later(
                            ValidationKind::BadFormat,
                            "`@` is `$`; decimals are strings like \"101.25\" (kept exact in every language)",
                            &value,
                        );
                    }
                    Kind::Decimal { positive: true }
                        if value.starts_with('-')
                            || value.bytes().all(|b| b == b'0' || b == b'.') =>
                    {
                        self.later(
                            ValidationKind::OutOfRange,
                            "`@` is `$`; it must be greater than zero",
                            &value,
                        );
                    }
                    _ => {}
                }
            }
            Kind::Number(range) => {
                if !matches!(found, Some(b'-' | b'0'..=b'9')) {
                    return Err(self.wrong_type(found, "a number"));
                }
                let text = r.number()?;
                if compare(text.trim_start_matches('-'), F64_OVERFLOW) != Ordering::Less {
                    return Err(self.fail(
                        ValidationKind::WrongType,
                        "`@` is $, a number out of range (in `%` data)",
                        text,
                        "",
                    ));
                }
                if let Some(range) = range {
                    if compare(text, range.lowest) == Ordering::Less
                        || compare(text, range.highest) == Ordering::Greater
                    {
                        self.later(ValidationKind::OutOfRange, range.message, text);
                    }
                }
            }
            Kind::UInt => {
                if !matches!(found, Some(b'-' | b'0'..=b'9')) {
                    return Err(self.wrong_type(found, "a whole number"));
                }
                let text = r.number()?;
                if !fits_u64(text) {
                    return Err(self.fail(
                        ValidationKind::WrongType,
                        "`@` is $; it must be a whole number from 0 to & (in `%` data)",
                        text,
                        U64_MAX,
                    ));
                }
            }
            Kind::Bool => {
                if !matches!(found, Some(b't' | b'f')) {
                    return Err(self.wrong_type(found, "true or false"));
                }
                r.bool()?;
            }
            Kind::Any => {}
            Kind::Array(item) => {
                if found != Some(b'[') {
                    return Err(self.wrong_type(found, "an array"));
                }
                let mut index = 0;
                r.array(|r| {
                    let i = u64_text(u64::from(index));
                    index += 1;
                    self.at(&["[", &i, "]"], index - 1, r, item, false)
                })?;
            }
            Kind::Object(fields) => {
                if found != Some(b'{') {
                    return Err(self.wrong_type(found, "an object"));
                }
                // At most 64 fields per table (checked by a test).
                let mut seen = 0u64;
                r.object(|r, key| {
                    let Some(i) = fields.iter().position(|f| f.name == key) else {
                        return r.skip_value().map(drop);
                    };
                    if seen & 1 << i != 0 {
                        return Err(self.fail(
                            ValidationKind::WrongType,
                            "duplicate field `$` (in `%` data)",
                            key,
                            "",
                        ));
                    }
                    seen |= 1 << i;
                    let field = &fields[i];
                    self.at(&[".", key], i as u32, r, field.kind, !field.required)
                })?;
                for (i, field) in fields.iter().enumerate() {
                    if field.required && seen & 1 << i == 0 {
                        self.path.push('.');
                        self.path.push_str(field.name);
                        return Err(self.fail(
                            ValidationKind::Missing,
                            "`@` is required for `%`",
                            "",
                            "",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `u64::MAX` in decimal.
#[cfg(feature = "publish")]
const U64_MAX: &str = "18446744073709551615";

/// `-?[0-9]+(\.[0-9]+)?`, at most 64 bytes.
#[cfg(feature = "publish")]
fn is_decimal(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = match unsigned.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (unsigned, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits) && s.len() <= MAX_DECIMAL_LEN
}

/// Whether a JSON number's text is an integer from 0 to `u64::MAX` (JSON has no leading
/// zeros, so the length decides up to 20 digits).
#[cfg(feature = "publish")]
fn fits_u64(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
        && (text.len() < U64_MAX.len() || (text.len() == U64_MAX.len() && text <= U64_MAX))
}

/// A JSON number's text as sign, exponent and digits: the value is `0.d₁d₂… × 10^exp` where
/// the `d`s are `digits` without the point and leading zeros; `None` digits for zero.
#[cfg(feature = "publish")]
fn parts(text: &str) -> (bool, i64, Option<&str>) {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = unsigned.split_once(['e', 'E']).unwrap_or((unsigned, ""));
    let mut exp: i64 = 0;
    for b in exponent.bytes().filter(u8::is_ascii_digit) {
        // Saturated far beyond any exponent where a comparison could still change.
        exp = (exp * 10 + i64::from(b - b'0')).min(1 << 40);
    }
    if exponent.starts_with('-') {
        exp = -exp;
    }
    let int_len = mantissa.find('.').unwrap_or(mantissa.len()) as i64;
    let leading = mantissa
        .bytes()
        .take_while(|&b| b == b'0' || b == b'.')
        .filter(|&b| b == b'0');
    let zeros = leading.count() as i64;
    let start = mantissa.bytes().position(|b| matches!(b, b'1'..=b'9'));
    let digits = start.map(|i| &mantissa[i..]);
    (negative && digits.is_some(), int_len - zeros + exp, digits)
}

/// Compares two JSON number texts by the exact values they denote.
#[cfg(feature = "publish")]
fn compare(a: &str, b: &str) -> Ordering {
    let (a_neg, a_exp, a_digits) = parts(a);
    let (b_neg, b_exp, b_digits) = parts(b);
    let sign = |neg: bool, digits: Option<&str>| match (digits, neg) {
        (None, _) => 0,
        (Some(_), true) => -1,
        (Some(_), false) => 1,
    };
    let (a_sign, b_sign) = (sign(a_neg, a_digits), sign(b_neg, b_digits));
    let (Some(a_digits), Some(b_digits), true) = (a_digits, b_digits, a_sign == b_sign) else {
        return a_sign.cmp(&b_sign);
    };
    // Same sign, both non-zero: the magnitudes by exponent, then digit by digit (a digit
    // run that ends first is smaller only if the other goes on with a non-zero digit).
    let mut x = a_digits.bytes().filter(|&b| b != b'.');
    let mut y = b_digits.bytes().filter(|&b| b != b'.');
    let magnitude = a_exp.cmp(&b_exp).then_with(|| {
        loop {
            match (x.next(), y.next()) {
                (Some(p), Some(q)) if p == q => {}
                (Some(p), Some(q)) => break p.cmp(&q),
                (None, None) => break Ordering::Equal,
                (Some(p), None) => {
                    break if p != b'0' || x.any(|d| d != b'0') {
                        Ordering::Greater
                    } else {
                        Ordering::Equal
                    };
                }
                (None, Some(q)) => {
                    break if q != b'0' || y.any(|d| d != b'0') {
                        Ordering::Less
                    } else {
                        Ordering::Equal
                    };
                }
            }
        }
    });
    if a_sign < 0 {
        magnitude.reverse()
    } else {
        magnitude
    }
}

#[cfg(all(test, feature = "publish"))]
mod tests {
    use super::*;

    #[test]
    fn compare_is_exact() {
        use Ordering::*;
        for (a, b, want) in [
            ("0", "-0", Equal),
            ("0.0e5", "0", Equal),
            ("100", "1e2", Equal),
            ("100", "100.000", Equal),
            ("0.001", "1e-3", Equal),
            ("100.5", "100", Greater),
            ("-1", "0", Less),
            ("-1", "-2", Greater),
            ("99.99999", "100", Less),
            ("1e400", "1e399", Greater),
            ("1e-400", "0", Greater),
            ("-1e-400", "0", Less),
            ("25", "2.51e1", Less),
            ("10", "9", Greater),
            ("0.5", "0.05", Greater),
            ("1E+2", "100", Equal),
            ("1e99999999999999999999999", "1e400", Greater),
            ("1e-99999999999999999999999", "1e-400", Less),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    /// The limits are exactly where `f64` rounding changes side (Rust's parser rounds
    /// correctly): at the limit it still rounds into the range, a hair beyond it does not.
    #[test]
    fn limits_are_where_f64_rounding_changes() {
        let beyond = |limit: &str| {
            let (mantissa, exp) = limit.split_once('e').unwrap_or((limit, ""));
            let e = if exp.is_empty() {
                String::new()
            } else {
                format!("e{exp}")
            };
            format!("{mantissa}000001{e}")
        };
        assert_eq!(PERCENT.highest.parse::<f64>(), Ok(100.0));
        assert!(beyond(PERCENT.highest).parse::<f64>().unwrap() > 100.0);
        let low: f64 = PERCENT.lowest.parse().unwrap();
        assert!(low == 0.0 && low.is_sign_negative());
        assert!(beyond(PERCENT.lowest).parse::<f64>().unwrap() < 0.0);
        assert_eq!(F64_OVERFLOW.parse::<f64>(), Ok(f64::INFINITY));
        // Just below the overflow limit: the last digit lowered (…792 → …791).
        let below = F64_OVERFLOW.replace("792e308", "791e308");
        assert_eq!(below.parse::<f64>(), Ok(f64::MAX));
    }

    static ITEM: &[Field] = &[
        Field {
            name: "qty",
            kind: &Kind::Decimal { positive: true },
            required: true,
        },
        Field {
            name: "note",
            kind: &Kind::Str,
            required: false,
        },
    ];
    static NESTED: &[Field] = &[
        Field {
            name: "id",
            kind: &Kind::Name,
            required: true,
        },
        Field {
            name: "items",
            kind: &Kind::Array(&Kind::Object(ITEM)),
            required: false,
        },
        Field {
            name: "count",
            kind: &Kind::UInt,
            required: false,
        },
        Field {
            name: "on",
            kind: &Kind::Bool,
            required: false,
        },
    ];

    fn fails(data: &str) -> (String, ValidationKind) {
        let e = validate(data, NESTED, "test.nested").unwrap_err();
        (e.field, e.kind)
    }

    #[test]
    fn nested_tables_name_the_path() {
        use ValidationKind::*;
        validate(
            r#"{"id":"a","items":[{"qty":"1"},{"qty":"2","note":null}],"x":[1]}"#,
            NESTED,
            "t",
        )
        .unwrap();
        let f = |p: &str, k| (p.to_owned(), k);
        assert_eq!(
            fails(r#"{"id":"a","items":[{"qty":"1"},{"note":"n"}]}"#),
            f("data.items[1].qty", Missing)
        );
        assert_eq!(
            fails(r#"{"id":"a","items":[{"qty":"1"},{"qty":"2"},{"qty":3}]}"#),
            f("data.items[2].qty", WrongType)
        );
        assert_eq!(
            fails(r#"{"id":"a","items":[{"qty":"1"},{"qty":"-2"}]}"#),
            f("data.items[1].qty", OutOfRange)
        );
        assert_eq!(
            fails(r#"{"id":"a","items":[{"qty":"1."}]}"#),
            f("data.items[0].qty", BadFormat)
        );
        assert_eq!(
            fails(r#"{"id":"a","items":[1]}"#),
            f("data.items[0]", WrongType)
        );
        assert_eq!(
            fails(r#"{"id":"a","items":{}}"#),
            f("data.items", WrongType)
        );
        assert_eq!(
            fails(r#"{"id":"a","count":-1}"#),
            f("data.count", WrongType)
        );
        assert_eq!(
            fails(r#"{"id":"a","count":1.5}"#),
            f("data.count", WrongType)
        );
        assert_eq!(
            fails(r#"{"id":"a","count":18446744073709551616}"#),
            f("data.count", WrongType)
        );
        validate(r#"{"id":"a","count":18446744073709551615}"#, NESTED, "t").unwrap();
        assert_eq!(fails(r#"{"id":"a","on":1}"#), f("data.on", WrongType));
        // A repeated field is the object's fault (as serde reported it).
        assert_eq!(fails(r#"{"id":"a","id":"b"}"#), f("data", WrongType));
        assert_eq!(
            fails(&format!(r#"{{"id":"{}"}}"#, "a".repeat(129))),
            f("data.id", TooLong)
        );
        // Shape errors come before content errors, whatever the order in the text.
        assert_eq!(
            fails(r#"{"id":" ","count":"1"}"#),
            f("data.count", WrongType)
        );
        let e = validate(r#"{"items":[{"qty":"0"}]}"#, NESTED, "test.nested").unwrap_err();
        assert_eq!(e.message, "`id` is required for `test.nested`");
    }

    #[test]
    fn tables_fit_the_seen_mask() {
        assert!(NESTED.len() <= 64 && ITEM.len() <= 64);
    }
}

//! A small strict JSON reader and writer: courier-core's frame codec and the publish
//! queue's wire format on every target (re-exported as `courier_core::json`). A crate of its
//! own only so that `[profile.wasm-release]` can optimise it for speed (it is the per-event
//! hot path of the WASM client) while the rest stays size-optimised.
//!
//! Why not serde_json: in the WASM build, serde_json's parser, its error messages (which
//! pull in float formatting) and the generic `Deserialize` code per wire type were most of
//! the bundle. The protocol's frames and the publish answers are flat objects of strings,
//! integers, booleans and one raw `data` value, so a tokenizer over `&str` is enough.
//!
//! - [`Reader`] follows the RFC 8259 grammar exactly (no comments, no trailing commas, no
//!   leading zeros, control characters must be escaped, `\uXXXX` surrogate pairs are
//!   joined and lone surrogates refused when a string is decoded) and nests at most
//!   [`MAX_DEPTH`] deep, like serde_json. Numbers stay text until asked for as `u64`.
//!   [`Reader::skip_value`] checks a value and returns its raw text (an event's `data`).
//!   Objects are read with a closure per member ([`Reader::object`]) or, on the per-event
//!   path, member by member ([`Reader::open_object`], [`Reader::next_key`]).
//! - [`Obj`] writes an object field by field; strings are escaped as serde_json does.
//!
//! Serde derives stay on the wire types for the server, the OpenAPI document and tests.

use std::borrow::Cow;
use std::fmt;

/// How deep arrays and objects may nest (serde_json's limit).
pub const MAX_DEPTH: usize = 128;

/// Why a text is not the JSON that was expected: what, and at which byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What was wrong.
    pub what: Cow<'static, str>,
    /// Byte offset in the text.
    pub at: usize,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        f.write_str(" at byte ")?;
        f.write_str(&u64_text(self.at as u64))
    }
}

impl std::error::Error for JsonError {}

/// A cursor over JSON text.
pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Reader { text, pos: 0 }
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// An error at the current position.
    pub fn err(&self, what: impl Into<Cow<'static, str>>) -> JsonError {
        JsonError {
            what: what.into(),
            at: self.pos,
        }
    }

    #[inline]
    fn ws(&mut self) {
        // Frames are mostly written without whitespace: one compare in the common case.
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes().get(self.pos).copied()
    }

    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    #[inline]
    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), JsonError> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(self.err(what))
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), JsonError> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.err("expected a JSON value"))
        }
    }

    /// Only whitespace may follow.
    pub fn end(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.err("trailing characters")),
        }
    }

    /// Reads an object, calling `member` with each key; `member` must read the value.
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        self.object_dyn(&mut member)
    }

    // One copy of the loop for every caller (a generic copy per closure cost ~1 KB each in
    // the WASM build).
    fn object_dyn(
        &mut self,
        member: &mut dyn FnMut(&mut Self, &str) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        self.open_object()?;
        let mut first = true;
        while let Some(key) = self.next_key(&mut first)? {
            member(self, &key)?;
        }
        Ok(())
    }

    /// Reads the `{` of an object, to read it member by member with [`Reader::next_key`]:
    /// the form of [`Reader::object`] without a closure, for the per-event hot path.
    ///
    /// ```
    /// # use courier_json::Reader;
    /// let mut r = Reader::new(r#"{"a":1,"b":"x"}"#);
    /// r.open_object().unwrap();
    /// let mut first = true;
    /// let mut keys = Vec::new();
    /// while let Some(key) = r.next_key(&mut first).unwrap() {
    ///     keys.push(key.into_owned());
    ///     r.skip_value().unwrap();
    /// }
    /// assert_eq!(keys, ["a", "b"]);
    /// ```
    #[inline]
    pub fn open_object(&mut self) -> Result<(), JsonError> {
        self.expect(b'{', "expected an object")
    }

    /// The next member's key, its `:` read (the caller then reads the value), or `None` once
    /// the object's `}` is read. `first` starts `true` after [`Reader::open_object`] and is
    /// cleared here. Same grammar and errors as [`Reader::object`].
    #[inline]
    pub fn next_key(&mut self, first: &mut bool) -> Result<Option<Cow<'a, str>>, JsonError> {
        if *first {
            *first = false;
            if self.eat(b'}') {
                return Ok(None);
            }
        } else if !self.eat(b',') {
            return self.expect(b'}', "expected `,` or `}`").map(|()| None);
        }
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a key"));
        }
        self.pos += 1;
        let key = self.string_after_quote()?;
        self.expect(b':', "expected `:`")?;
        Ok(Some(key))
    }

    /// Reads an array, calling `item` once per element; `item` must read it.
    pub fn array(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        self.array_dyn(&mut item)
    }

    fn array_dyn(
        &mut self,
        item: &mut dyn FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<(), JsonError> {
        self.expect(b'[', "expected an array")?;
        if self.eat(b']') {
            return Ok(());
        }
        loop {
            item(self)?;
            if !self.eat(b',') {
                return self.expect(b']', "expected `,` or `]`");
            }
        }
    }

    /// Reads `null` if it comes next.
    #[inline]
    pub fn null(&mut self) -> bool {
        if self.peek() == Some(b'n') && self.text[self.pos..].starts_with("null") {
            self.pos += 4;
            true
        } else {
            false
        }
    }

    /// Reads `null` as `None`, anything else with `read`.
    pub fn opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, JsonError>,
    ) -> Result<Option<T>, JsonError> {
        if self.null() {
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// Reads a string into a `String`.
    #[inline]
    pub fn owned(&mut self) -> Result<String, JsonError> {
        // `string` inlined: an event's strings (id, type, channel, …) all come this way.
        self.expect(b'"', "expected a string")?;
        self.string_after_quote().map(Cow::into_owned)
    }

    /// Reads a value with `read`; when that fails, goes back and skips the value instead,
    /// so the text is still checked to its end (a syntax error then comes first) and the
    /// failure is handed back as the inner `Err`.
    pub fn try_read<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, JsonError>,
    ) -> Result<Result<T, JsonError>, JsonError> {
        self.ws();
        let start = self.pos;
        match read(self) {
            Ok(v) => Ok(Ok(v)),
            Err(e) => {
                self.pos = start;
                self.skip_value()?;
                Ok(Err(e))
            }
        }
    }

    /// Reads `true` or `false`.
    pub fn bool(&mut self) -> Result<bool, JsonError> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|()| true),
            Some(b'f') => self.literal("false").map(|()| false),
            _ => Err(self.err("expected a boolean")),
        }
    }

    /// Reads a non-negative integer that fits in a `u64` (no fraction, no exponent).
    pub fn u64(&mut self) -> Result<u64, JsonError> {
        self.ws();
        // The common case in one pass: 1 to 19 digits (cannot overflow), no leading zero,
        // and no fraction or exponent after them.
        let b = self.bytes();
        let start = self.pos;
        if let Some(b'1'..=b'9') = b.get(start) {
            let mut i = start;
            let mut n: u64 = 0;
            while let Some(&c @ b'0'..=b'9') = b.get(i) {
                n = n.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                i += 1;
            }
            if i - start <= 19 && !matches!(b.get(i), Some(b'.' | b'e' | b'E')) {
                self.pos = i;
                return Ok(n);
            }
        }
        self.u64_slow()
    }

    #[inline(never)]
    fn u64_slow(&mut self) -> Result<u64, JsonError> {
        let start = self.pos;
        let text = self.number()?;
        let mut n: u64 = 0;
        for b in text.bytes() {
            if !b.is_ascii_digit() {
                self.pos = start;
                return Err(self.err("expected an unsigned integer"));
            }
            n = match n
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
            {
                Some(n) => n,
                None => {
                    self.pos = start;
                    return Err(self.err("integer out of range"));
                }
            };
        }
        Ok(n)
    }

    /// Reads a number whose value is a whole number that fits in a `u64`, however it is
    /// written: `5`, `5.0`, `5e3`, `1.7323e12`, `-0` (JSON Schema's `integer`). A fraction
    /// that is not zero, a negative value or one over `u64::MAX` is refused.
    pub fn whole_u64(&mut self) -> Result<u64, JsonError> {
        let start = self.pos;
        match self.u64() {
            Ok(n) => Ok(n),
            Err(_) => {
                self.pos = start;
                self.whole_u64_slow()
            }
        }
    }

    /// [`Reader::whole_u64`] of a number written with a sign, a fraction or an exponent.
    #[inline(never)]
    fn whole_u64_slow(&mut self) -> Result<u64, JsonError> {
        let start = self.pos;
        let text = self.number()?;
        let fail = |r: &mut Self, what: &'static str| {
            r.pos = start;
            Err(r.err(what))
        };
        let (negative, text) = match text.strip_prefix('-') {
            Some(t) => (true, t),
            None => (false, text),
        };
        let (mantissa, exp) = match text.find(['e', 'E']) {
            Some(i) => (&text[..i], &text[i + 1..]),
            None => (text, "0"),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        // The value is the digits of `int` then `frac`, without their leading and trailing
        // zeros (`significant`), times 10^`scale`.
        let all = || int.bytes().chain(frac.bytes());
        let total = int.len() + frac.len();
        let leading = all().take_while(|&b| b == b'0').count();
        if leading == total {
            return Ok(0); // 0, -0, 0.000, 0e99
        }
        if negative {
            return fail(self, "expected an unsigned integer");
        }
        let trailing = all().rev().take_while(|&b| b == b'0').count();
        let significant = total - leading - trailing;
        // An exponent too long to matter: huge means out of range, tiny means a fraction.
        let exp: i64 = match exp.parse() {
            Ok(e) if (-1_000..=1_000).contains(&e) => e,
            _ if exp.starts_with('-') => return fail(self, "expected an unsigned integer"),
            _ => return fail(self, "integer out of range"),
        };
        let scale = exp - frac.len() as i64 + trailing as i64;
        if scale < 0 {
            return fail(self, "expected an unsigned integer");
        }
        if significant as i64 + scale > 20 {
            return fail(self, "integer out of range");
        }
        let digits = all()
            .skip(leading)
            .take(significant)
            .map(|b| u64::from(b - b'0'));
        let zeros = std::iter::repeat_n(0, scale as usize);
        match digits
            .chain(zeros)
            .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(d))
        {
            Some(n) => Ok(n),
            _ => fail(self, "integer out of range"),
        }
    }

    /// Reads a `u64` that fits in a `usize`.
    pub fn usize(&mut self) -> Result<usize, JsonError> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err("integer out of range"))
    }

    /// Reads a number and returns its text (RFC 8259 grammar).
    pub fn number(&mut self) -> Result<&'a str, JsonError> {
        self.ws();
        let b = self.bytes();
        let start = self.pos;
        let mut i = start;
        let digits = |i: &mut usize| {
            let from = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > from
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return Err(self.err("expected a number")),
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                self.pos = i;
                return Err(self.err("expected a digit"));
            }
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !digits(&mut i) {
                self.pos = i;
                return Err(self.err("expected a digit"));
            }
        }
        self.pos = i;
        Ok(&self.text[start..i])
    }

    /// Reads a string and returns it unescaped (borrowed when it has no escapes).
    #[inline]
    pub fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.expect(b'"', "expected a string")?;
        self.string_after_quote()
    }

    /// [`Reader::string`] after its opening quote (inlined into the object walk's keys).
    #[inline(always)]
    fn string_after_quote(&mut self) -> Result<Cow<'a, str>, JsonError> {
        // The common case: no escape before the closing quote.
        let start = self.pos;
        let end = plain_run_end(self.bytes(), start);
        if self.bytes().get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok(Cow::Borrowed(&self.text[start..end]));
        }
        self.string_with_escapes(start)
    }

    /// The rest of [`Reader::string`]: a string with escapes (or an error), from `start`.
    #[inline(never)]
    fn string_with_escapes(&mut self, start: usize) -> Result<Cow<'a, str>, JsonError> {
        let b = self.bytes();
        self.pos = start;
        let mut owned: Option<String> = None;
        let mut run = start;
        loop {
            self.pos = plain_run_end(b, self.pos);
            let Some(&c) = b.get(self.pos) else {
                return Err(self.err("unterminated string"));
            };
            match c {
                b'"' => {
                    let tail = &self.text[run..self.pos];
                    self.pos += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                    });
                }
                b'\\' => {
                    let s = owned.get_or_insert_with(String::new);
                    s.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    let unescaped = self.escape(true)?;
                    s.push(unescaped);
                    run = self.pos;
                }
                0..0x20 => return Err(self.err("control character in string")),
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a string (escapes checked, surrogates not paired: they are not decoded).
    #[inline]
    fn skip_string(&mut self) -> Result<(), JsonError> {
        self.pos += 1;
        let b = self.bytes();
        let end = plain_run_end(b, self.pos);
        if b.get(end) == Some(&b'"') {
            self.pos = end + 1;
            return Ok(());
        }
        self.pos = end;
        self.skip_string_with_escapes()
    }

    #[inline(never)]
    fn skip_string_with_escapes(&mut self) -> Result<(), JsonError> {
        let b = self.bytes();
        loop {
            self.pos = plain_run_end(b, self.pos);
            match b.get(self.pos) {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(false)?;
                }
                Some(0..0x20) => return Err(self.err("control character in string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut n = 0;
        for _ in 0..4 {
            let d = match self.bytes().get(self.pos) {
                Some(&c) => (c as char).to_digit(16),
                None => None,
            };
            let Some(d) = d else {
                return Err(self.err("invalid \\u escape"));
            };
            n = n * 16 + d;
            self.pos += 1;
        }
        Ok(n)
    }

    /// The escape after a backslash; `decode` joins surrogate pairs and refuses lone ones.
    fn escape(&mut self, decode: bool) -> Result<char, JsonError> {
        let Some(&c) = self.bytes().get(self.pos) else {
            return Err(self.err("unterminated string"));
        };
        self.pos += 1;
        Ok(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                if !decode {
                    return Ok('\0');
                }
                if (0xDC00..0xE000).contains(&hi) {
                    return Err(self.err("lone surrogate in \\u escape"));
                }
                if (0xD800..0xDC00).contains(&hi) {
                    if !self.text[self.pos..].starts_with("\\u") {
                        return Err(self.err("lone surrogate in \\u escape"));
                    }
                    self.pos += 2;
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(self.err("lone surrogate in \\u escape"));
                    }
                    let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    return char::from_u32(c).ok_or_else(|| self.err("invalid \\u escape"));
                }
                return char::from_u32(hi).ok_or_else(|| self.err("invalid \\u escape"));
            }
            _ => {
                self.pos -= 1;
                return Err(self.err("invalid escape"));
            }
        })
    }

    /// Checks one value of any kind and returns its raw text (without surrounding
    /// whitespace). Iterative: deep nesting fails at [`MAX_DEPTH`], never overflows.
    pub fn skip_value(&mut self) -> Result<&'a str, JsonError> {
        self.ws();
        let start = self.pos;
        // One bit per open container: 1 for an object, 0 for an array.
        let mut stack: u128 = 0;
        let mut depth = 0usize;
        loop {
            // A value.
            match self.peek() {
                Some(b'"') => self.skip_string()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(open @ (b'{' | b'[')) => {
                    if depth == MAX_DEPTH {
                        return Err(self.err("nested too deeply"));
                    }
                    self.pos += 1;
                    let is_object = open == b'{';
                    stack = (stack << 1) | u128::from(is_object);
                    depth += 1;
                    let close = if is_object { b'}' } else { b']' };
                    if self.eat(close) {
                        stack >>= 1;
                        depth -= 1;
                    } else {
                        if is_object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                _ => return Err(self.err("expected a JSON value")),
            }
            // After a value: close containers or move to the next element.
            loop {
                if depth == 0 {
                    return Ok(&self.text[start..self.pos]);
                }
                let is_object = stack & 1 == 1;
                if self.eat(b',') {
                    if is_object {
                        self.member_key()?;
                    }
                    break;
                }
                if is_object {
                    self.expect(b'}', "expected `,` or `}`")?;
                } else {
                    self.expect(b']', "expected `,` or `]`")?;
                }
                stack >>= 1;
                depth -= 1;
            }
        }
    }

    fn member_key(&mut self) -> Result<(), JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.err("expected a key"));
        }
        self.skip_string()?;
        self.expect(b':', "expected `:`")
    }
}

/// The index of the first byte at or after `i` that ends a run of plain string content: a
/// quote, a backslash or a control character (or `b.len()`). Strings are most of a frame's
/// bytes, so this looks at eight bytes per step ("SWAR": a byte-wise compare in one `u64`).
#[inline]
fn plain_run_end(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Sets the high bit of the bytes of `v` below `n` (n <= 0x80). A byte above one that is
    // below `n` may be flagged too (the subtraction's borrow), but never a byte under the
    // lowest one that is: the lowest flag is exact, and the bytes are read little-endian,
    // so the lowest flag is the first such byte of the text.
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        let stops = below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1)
            | below(v, 0x20);
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// Which members of an object were seen, to refuse duplicates (as serde does).
#[derive(Default)]
pub struct Seen(u64);

impl Seen {
    /// Marks member `bit` (below 64) as seen; an error if it was already.
    #[inline]
    pub fn first(&mut self, bit: u32, r: &Reader<'_>, name: &str) -> Result<(), JsonError> {
        let mask = 1u64 << bit;
        if self.0 & mask != 0 {
            return Err(duplicate(r, name));
        }
        self.0 |= mask;
        Ok(())
    }
}

impl Seen {
    /// Reads member `bit` into `slot` with `read`, refusing a repeated member: one line per
    /// member in the wire types' readers.
    pub fn read<'a, T>(
        &mut self,
        bit: u32,
        r: &mut Reader<'a>,
        key: &str,
        slot: &mut T,
        read: impl FnOnce(&mut Reader<'a>) -> Result<T, JsonError>,
    ) -> Result<(), JsonError> {
        self.first(bit, r, key)?;
        *slot = read(r)?;
        Ok(())
    }
}

#[cold]
#[inline(never)]
fn duplicate(r: &Reader<'_>, name: &str) -> JsonError {
    let mut what = String::from("duplicate field `");
    what.push_str(name);
    what.push('`');
    r.err(what)
}

/// Unwraps a required member, or says it is missing.
pub fn required<T>(value: Option<T>, r: &Reader<'_>, name: &str) -> Result<T, JsonError> {
    value.ok_or_else(|| {
        let mut what = String::from("missing field `");
        what.push_str(name);
        what.push('`');
        r.err(what)
    })
}

/// Checks that `text` is exactly one JSON value (surrounding whitespace allowed).
pub fn validate(text: &str) -> Result<(), JsonError> {
    let mut r = Reader::new(text);
    r.skip_value()?;
    r.end()
}

/// A `u64` in decimal, without `core::fmt`.
pub fn u64_text(mut n: u64) -> String {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf[i..].iter().map(|&b| b as char).collect()
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
pub fn push_str(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0C => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        run = i + 1;
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        } else {
            out.push_str(short);
        }
    }
    out.push_str(&s[run..]);
    out.push('"');
}

/// Writes one JSON object, member by member, into a `String`. Keys are written as given
/// (they are the protocol's fixed field names).
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object at the end of `out`.
    pub fn new(out: &'a mut String) -> Self {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out
    }

    /// A string member.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        push_str(self.key(key), value);
        self
    }

    /// A string member, left out when `None`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    /// An integer member.
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        let text = u64_text(value);
        self.key(key).push_str(&text);
        self
    }

    /// An integer member, left out when `None`.
    pub fn opt_u64(&mut self, key: &str, value: Option<u64>) -> &mut Self {
        if let Some(v) = value {
            self.u64(key, v);
        }
        self
    }

    /// A boolean member.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    /// A member whose value is already JSON text.
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key).push_str(json);
        self
    }

    /// A member whose value is written by `write` (a nested object, say).
    pub fn with(&mut self, key: &str, write: impl FnOnce(&mut String)) -> &mut Self {
        write(self.key(key));
        self
    }

    /// Closes the object.
    pub fn end(&mut self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_u64_reads_any_whole_number() {
        let read = |t: &str| {
            let mut r = Reader::new(t);
            r.whole_u64().map(|n| (n, r.end().is_ok()))
        };
        for (text, n) in [
            ("5", 5),
            ("5.0", 5),
            ("653.000", 653),
            ("5e3", 5_000),
            ("5E+3", 5_000),
            ("1.7323e12", 1_732_300_000_000),
            ("17323000000000e-1", 1_732_300_000_000),
            ("0", 0),
            ("-0", 0),
            ("-0.0", 0),
            ("0e999999", 0),
            ("18446744073709551615", u64::MAX),
            ("18446744073709551615.000", u64::MAX),
            ("1.8446744073709551615e19", u64::MAX),
        ] {
            assert_eq!(
                read(text).map_err(|e| e.to_string()),
                Ok((n, true)),
                "{text}"
            );
        }
        for (text, why) in [
            ("1.5", "expected an unsigned integer"),
            ("5e-1", "expected an unsigned integer"),
            ("1e-99999999999", "expected an unsigned integer"),
            ("-1", "expected an unsigned integer"),
            ("-1.0", "expected an unsigned integer"),
            ("18446744073709551616", "integer out of range"),
            ("1.8446744073709551616e19", "integer out of range"),
            ("1e20", "integer out of range"),
            ("1e999", "integer out of range"),
            ("1e99999999999", "integer out of range"),
            ("\"5\"", "expected a number"),
        ] {
            let e = read(text).expect_err(text);
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn grammar() {
        for ok in [
            "0",
            "-0",
            "1.5e-3",
            "\"a\\u00e9\\ud83d\\ude00\"",
            " [1, {\"a\": [true, false, null]}, \"x\"] ",
            "{}",
            "[]",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "01",
            "1.",
            "-",
            "1e",
            "[1,]",
            "{\"a\":1,}",
            "{a:1}",
            "\"\t\"",
            "tru",
            "[1] x",
            "\"\\x\"",
            "\"\\u12\"",
            "{\"a\" 1}",
            "[",
            "nul",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(validate(&deep), Ok(()));
        let deeper = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(validate(&deeper).is_err());
        assert!(validate(&"[".repeat(100_000)).is_err());
    }

    #[test]
    fn strings_and_numbers() {
        let mut r = Reader::new(r#""a\"b\u00e9\ud83d\ude00\n""#);
        assert_eq!(r.string().unwrap(), "a\"bé😀\n");
        assert!(Reader::new(r#""\ud83d""#).string().is_err());
        assert!(Reader::new(r#""\ude00""#).string().is_err());
        assert_eq!(Reader::new("18446744073709551615").u64(), Ok(u64::MAX));
        assert!(Reader::new("18446744073709551616").u64().is_err());
        assert!(Reader::new("-1").u64().is_err());
        assert!(Reader::new("1.0").u64().is_err());
        let mut r = Reader::new(r#" {"a" : [1, {"b": "}"}] , "c": 2} x"#);
        assert_eq!(
            r.skip_value().unwrap(),
            r#"{"a" : [1, {"b": "}"}] , "c": 2}"#
        );
        assert!(r.end().is_err());
    }

    #[test]
    fn plain_run_end_finds_the_first_stop() {
        // Against a byte-by-byte scan, from every start, with stops (quote, backslash,
        // control characters, and the bytes right around them) at every place in a word,
        // alone and in pairs (a borrow from a lower stop must not hide it or move it).
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| matches!(b[j], b'"' | b'\\' | 0..0x20))
                .unwrap_or(b.len())
        };
        let fill = [b'a', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff, b' '];
        let stops = [b'"', b'\\', 0, 1, 0x1f, b'\n', b'\t'];
        for &f in &fill {
            for len in 0..20 {
                for p in 0..len {
                    for &s in &stops {
                        let mut b = vec![f; len];
                        b[p] = s;
                        for q in [None, Some(p + 1), Some(p + 3)] {
                            let mut b = b.clone();
                            if let Some(q) = q.filter(|&q| q < len) {
                                b[q] = b'"';
                            }
                            for i in 0..=len {
                                assert_eq!(plain_run_end(&b, i), naive(&b, i), "{b:?} from {i}");
                            }
                        }
                    }
                }
                let b = vec![f; len];
                assert_eq!(plain_run_end(&b, 0), naive(&b, 0));
            }
        }
    }

    #[test]
    fn writer_escapes_like_serde_json() {
        for s in [
            "plain",
            "q\"b\\s",
            "\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}",
            "é😀",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
        let mut out = String::new();
        Obj::new(&mut out)
            .str("a", "x")
            .u64("n", 0)
            .opt_u64("m", None)
            .bool("b", true)
            .raw("r", "[1]")
            .end();
        assert_eq!(out, r#"{"a":"x","n":0,"b":true,"r":[1]}"#);
        assert_eq!(u64_text(u64::MAX), u64::MAX.to_string());
    }
}

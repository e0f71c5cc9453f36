//! WebSocket compression: permessage-deflate (RFC 7692) as a small extension over
//! tungstenite.
//!
//! Decision: an extension over tungstenite, not a WebSocket crate that implements RFC 7692.
//! `yawc` 0.5 (checked; RFC 7692, axum extractor, Autobahn-tested) compresses every message
//! in its sink, once per connection, and a `Frame`'s RSV1 bit cannot be set from outside,
//! so an event fanned out to 1,000 subscribers would be deflated 1,000 times. Here an event
//! is deflated once, and the same bytes, RSV1 set, are written to every subscriber that
//! can read them (tungstenite writes such a frame as given, `Message::Frame`):
//!
//! - **On its own** ([`deflate`], cached in [`Published`](crate::store::Published)): the
//!   bytes do not depend on the connection, so every compressing subscriber can take them.
//! - **In a [`Cohort`]**: subscribers of a channel that went live together share one
//!   deflate stream with context; each event is deflated once per cohort with the events
//!   before it as its dictionary (about 0.17 of a typical event's size against 0.65 on its
//!   own). The server answers without `server_no_context_takeover` so that it may do this,
//!   unless the client asks for it; a message deflated on its own reads the same either way.
//!
//! tungstenite refuses any frame with RSV1 set, so the client's compressed messages are
//! inflated below it: [`Transport`] reads the socket, passes uncompressed frames through
//! untouched and turns each compressed message (one frame or fragments, with control
//! frames between them) into one uncompressed frame before tungstenite parses it. The
//! server also answers `client_no_context_takeover`, so a client's messages are
//! independent too and a connection keeps no inflate state between them.
//!
//! What is accepted: the first `permessage-deflate` offer whose parameters are all known,
//! valid and not repeated, with `server_max_window_bits` absent or 15 (the deflater's
//! window is fixed at 15 bits, so an offer asking for a smaller one is declined and that
//! client gets plain frames). `client_max_window_bits` is accepted with any value: a
//! 15-bit inflater reads output made with any smaller window.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};

use axum::http::HeaderMap;
use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use ws_tungstenite::tungstenite::protocol::frame::FrameHeader;
use ws_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The `Sec-WebSocket-Extensions` answer to an accepted offer. The server keeps the right
/// to deflate with context (a [`Cohort`]'s stream), and uses it or not message by message:
/// a message deflated on its own reads the same under either.
pub(crate) const RESPONSE: &str = "permessage-deflate; client_no_context_takeover";

/// The answer to an offer that asks for `server_no_context_takeover`: that connection only
/// ever gets messages deflated on their own.
pub(crate) const RESPONSE_NO_CONTEXT: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// An accepted offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Offer {
    /// The client asked the server not to deflate with context.
    pub(crate) server_no_context_takeover: bool,
}

/// The four bytes a sync flush ends with, removed from a message (RFC 7692 §7.2.1) and put
/// back before inflating it.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// zlib level 6: on events of a few hundred bytes, levels 1 to 9 give within 1 % of each
/// other, and an event is deflated once, whatever its number of subscribers.
const LEVEL: u32 = 6;

/// The first permessage-deflate offer of the client's `Sec-WebSocket-Extensions` in a form
/// this server accepts (see the module docs).
pub(crate) fn offered(headers: &HeaderMap) -> Option<Offer> {
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(acceptable)
}

/// One offer: `permessage-deflate; param[=value]; ...`.
fn acceptable(offer: &str) -> Option<Offer> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
    {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        let bits = |v: &str| v.parse::<u8>().ok().filter(|b| (8..=15).contains(b));
        let ok = match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            ("server_max_window_bits", Some(v)) => bits(v) == Some(15),
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(v)) => bits(v).is_some(),
            _ => false,
        };
        if !ok {
            return None;
        }
        seen.push(name);
    }
    Some(Offer {
        server_no_context_takeover: seen.iter().any(|n| n == "server_no_context_takeover"),
    })
}

thread_local! {
    /// One deflater per thread, reset before each message (no context takeover): building
    /// one costs far more than deflating a small event.
    static DEFLATER: RefCell<Compress> = RefCell::new(Compress::new(Compression::new(LEVEL), false));
    /// Likewise for the client's messages.
    static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// `message` deflated on its own, as a permessage-deflate payload (the sync flush's last
/// four bytes removed).
pub(crate) fn deflate(message: &[u8]) -> Bytes {
    DEFLATER.with(|d| {
        let mut d = d.borrow_mut();
        d.reset();
        deflate_next(&mut d, message)
    })
}

/// `message` deflated by `d` after whatever it deflated before (its window is kept).
fn deflate_next(d: &mut Compress, message: &[u8]) -> Bytes {
    let start = d.total_in();
    let mut out = Vec::with_capacity(message.len() / 2 + 64);
    loop {
        let consumed = (d.total_in() - start) as usize;
        // Deflating from memory into a vector has no failure the caller could act on.
        d.compress_vec(&message[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate into memory");
        if (d.total_in() - start) as usize == message.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    Bytes::from(out)
}

/// Most cohorts alive at once, server-wide: each holds a deflater (about 250 KB).
const MAX_COHORTS: usize = 64;

/// Deflated events a cohort keeps for the members that deliver one after another member
/// made it (a fan-out delivers an event to every subscriber before the next few).
const RECENT: usize = 256;

/// One deflate stream with context, shared by subscribers of one channel: each event is
/// deflated once for all of them, and with the events before it as its dictionary, which
/// shrinks small events far more than deflating each alone (about 0.2 of their size
/// against 0.65 for typical 400-byte events).
///
/// A member may use the stream's messages only while it has sent every one of them, in
/// order, with no other compressed message between them on its connection (its client's
/// inflater then holds the same window as the stream's deflater). Each deflated event
/// carries its sequence number; a member that finds one it did not expect (it joined late,
/// skipped an event, or the stream moved on) leaves for good and gets events deflated on
/// their own, which any client reads.
pub(crate) struct Cohort {
    state: Mutex<CohortState>,
    live: Arc<AtomicUsize>,
}

struct CohortState {
    deflater: Compress,
    /// Messages deflated so far.
    seq: u64,
    /// The epoch and offset of the last one.
    last: Option<(Arc<str>, u64)>,
    /// The last few: offset, sequence number, bytes.
    recent: VecDeque<(u64, u64, Bytes)>,
}

impl Cohort {
    /// The deflated bytes of event `offset` of `epoch` and their sequence number in the
    /// stream (from 1), deflating `frame` if the event is newer than the last one; `None`
    /// when it is older and no longer held (the caller leaves the cohort).
    pub(crate) fn deflate(
        &self,
        epoch: &Arc<str>,
        offset: u64,
        frame: &[u8],
    ) -> Option<(u64, Bytes)> {
        let mut s = self.state.lock().expect("cohort lock");
        if let Some((last_epoch, last)) = &s.last {
            if last_epoch != epoch {
                return None;
            }
            if offset <= *last {
                // From the newest: the fan-out asks for the event it just deflated.
                return s
                    .recent
                    .iter()
                    .rev()
                    .find(|(o, _, _)| *o == offset)
                    .map(|(_, seq, b)| (*seq, b.clone()));
            }
        }
        let bytes = deflate_next(&mut s.deflater, frame);
        s.seq += 1;
        let seq = s.seq;
        s.last = Some((epoch.clone(), offset));
        if s.recent.len() == RECENT {
            s.recent.pop_front();
        }
        s.recent.push_back((offset, seq, bytes.clone()));
        Some((seq, bytes))
    }

    fn is_fresh(&self) -> bool {
        self.state.lock().expect("cohort lock").seq == 0
    }
}

impl Drop for Cohort {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The cohorts of a server: per channel, the one a subscriber going live joins.
#[derive(Default)]
pub(crate) struct Cohorts {
    open: Mutex<HashMap<String, Weak<Cohort>>>,
    live: Arc<AtomicUsize>,
}

impl Cohorts {
    /// The cohort for a subscriber of `channel` going live now: the channel's current one
    /// while it has deflated nothing yet, else a new one; `None` past [`MAX_COHORTS`].
    pub(crate) fn join(&self, channel: &str) -> Option<Arc<Cohort>> {
        let mut open = self.open.lock().expect("cohorts lock");
        if let Some(c) = open.get(channel).and_then(Weak::upgrade) {
            if c.is_fresh() {
                return Some(c);
            }
        }
        if self.live.load(Ordering::Relaxed) >= MAX_COHORTS {
            return None;
        }
        open.retain(|_, c| c.strong_count() > 0);
        self.live.fetch_add(1, Ordering::Relaxed);
        let cohort = Arc::new(Cohort {
            state: Mutex::new(CohortState {
                deflater: Compress::new(Compression::new(LEVEL), false),
                seq: 0,
                last: None,
                recent: VecDeque::new(),
            }),
            live: self.live.clone(),
        });
        open.insert(channel.to_owned(), Arc::downgrade(&cohort));
        Some(cohort)
    }
}

/// A compressed message from the client that cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InflateError {
    /// It inflates (or its compressed bytes add up) to more than the frame limit.
    #[error("a compressed message is over the size limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Not valid deflate data.
    #[error("a compressed message is not valid deflate data")]
    Corrupt,
    /// Frames that break RFC 7692's rules (RSV1 on a continuation, a new message inside a
    /// compressed one).
    #[error("{0}")]
    Protocol(&'static str),
}

impl InflateError {
    /// The error inside a tungstenite I/O error, if it is one of these.
    pub(crate) fn of(e: &io::Error) -> Option<&Self> {
        e.get_ref().and_then(|e| e.downcast_ref::<Self>())
    }
}

/// `compressed` (a whole message's payload) inflated, at most `max` bytes.
fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|i| {
        let mut i = i.borrow_mut();
        i.reset(false);
        let input = [compressed, &TAIL[..]].concat();
        let mut out = Vec::with_capacity((compressed.len() * 3).min(max + 1).max(64));
        loop {
            let consumed = i.total_in() as usize;
            let status = i
                .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            if out.len() > max {
                return Err(InflateError::TooLarge { max });
            }
            let done = i.total_in() as usize == input.len() && out.len() < out.capacity();
            if done || status == Status::StreamEnd {
                return Ok(out);
            }
            if status == Status::BufError && out.len() < out.capacity() {
                // No progress with room left: the input ends inside a block.
                return Err(InflateError::Corrupt);
            }
            out.reserve(out.capacity().min(max + 1 - out.len()).max(64));
        }
    })
}

/// Where [`Transport`] is in the client's frame stream.
enum Reading {
    /// Waiting for a frame header.
    Header,
    /// Passing this many more bytes of an uncompressed frame through.
    Pass(u64),
    /// Collecting this many more payload bytes of a compressed message's frame.
    Collect {
        remaining: u64,
        mask: Option<[u8; 4]>,
        /// Bytes of this frame's payload unmasked so far (the mask's phase).
        at: usize,
        fin: bool,
    },
    /// Something tungstenite will refuse: everything passes through from here.
    Raw,
}

/// A compressed message being collected: its opcode and deflated bytes.
struct Message {
    opcode: OpCode,
    data: Vec<u8>,
}

/// The upgraded socket under tungstenite: writes pass through; reads inflate the client's
/// compressed messages when permessage-deflate was negotiated (see the module docs).
pub(crate) struct Transport<S> {
    inner: S,
    /// Whether permessage-deflate was negotiated.
    inflate: bool,
    /// Largest message accepted, compressed or inflated (tungstenite's own limit).
    max: usize,
    /// Bytes read from the socket, not handled yet.
    raw: BytesMut,
    /// Bytes ready for tungstenite.
    ready: BytesMut,
    reading: Reading,
    message: Option<Message>,
}

impl<S> Transport<S> {
    /// Wraps `inner`; `inflate` when the handshake agreed on permessage-deflate.
    pub(crate) fn new(inner: S, inflate: bool, max: usize) -> Self {
        Self {
            inner,
            inflate,
            max,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            reading: Reading::Header,
            message: None,
        }
    }

    /// Moves what it can from `raw` to `ready`; false when it needs more bytes.
    fn step(&mut self) -> Result<bool, InflateError> {
        match &mut self.reading {
            Reading::Raw => {
                let n = self.raw.len();
                self.ready.extend_from_slice(&self.raw.split_to(n));
                Ok(n > 0)
            }
            Reading::Pass(left) => {
                let n = (*left).min(self.raw.len() as u64) as usize;
                self.ready.extend_from_slice(&self.raw.split_to(n));
                *left -= n as u64;
                if *left == 0 {
                    self.reading = Reading::Header;
                }
                Ok(n > 0)
            }
            Reading::Collect {
                remaining,
                mask,
                at,
                fin,
            } => {
                let n = (*remaining).min(self.raw.len() as u64) as usize;
                let (mask, fin) = (*mask, *fin);
                let mut chunk = self.raw.split_to(n);
                if let Some(key) = mask {
                    for (i, b) in chunk.iter_mut().enumerate() {
                        *b ^= key[(*at + i) % 4];
                    }
                }
                *at += n;
                *remaining -= n as u64;
                let done = *remaining == 0;
                let message = self
                    .message
                    .as_mut()
                    .expect("a compressed message is being collected");
                message.data.extend_from_slice(&chunk);
                if message.data.len() > self.max {
                    return Err(InflateError::TooLarge { max: self.max });
                }
                if done {
                    self.reading = Reading::Header;
                    if fin {
                        let message = self.message.take().expect("collected message");
                        self.emit(message)?;
                    }
                }
                Ok(n > 0 || done)
            }
            Reading::Header => self.header(),
        }
    }

    /// Reads one frame header from `raw` and decides what to do with the frame.
    fn header(&mut self) -> Result<bool, InflateError> {
        let mut cursor = io::Cursor::new(&self.raw[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(h)) => h,
            Ok(None) => return Ok(false),
            Err(_) => {
                self.reading = Reading::Raw;
                return Ok(true);
            }
        };
        let header_len = cursor.position() as usize;
        let data = matches!(header.opcode, OpCode::Data(_));
        let continuation = header.opcode == OpCode::Data(Data::Continue);
        let collect = |fin| Reading::Collect {
            remaining: len,
            mask: header.mask,
            at: 0,
            fin,
        };
        if self.message.is_some() && data {
            if !continuation {
                return Err(InflateError::Protocol(
                    "a new message began before a compressed message ended",
                ));
            }
            if header.rsv1 {
                return Err(InflateError::Protocol(
                    "RSV1 is set on a continuation frame",
                ));
            }
            self.raw.advance(header_len);
            self.reading = collect(header.is_final);
        } else if header.rsv1
            && !header.rsv2
            && !header.rsv3
            && data
            && !continuation
            && self.inflate
        {
            if len > self.max as u64 {
                return Err(InflateError::TooLarge { max: self.max });
            }
            self.raw.advance(header_len);
            self.message = Some(Message {
                opcode: header.opcode,
                data: Vec::new(),
            });
            self.reading = collect(header.is_final);
        } else {
            // Uncompressed, a control frame, or a reserved bit tungstenite will refuse.
            self.reading = Reading::Pass(header_len as u64 + len);
        }
        Ok(true)
    }

    /// Hands tungstenite the inflated message as one uncompressed frame (masked with a zero
    /// key, as tungstenite requires of a client's frames).
    fn emit(&mut self, message: Message) -> Result<(), InflateError> {
        let payload = inflate(&message.data, self.max)?;
        let header = FrameHeader {
            is_final: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode: message.opcode,
            mask: Some([0; 4]),
        };
        let mut head = Vec::with_capacity(14);
        header
            .format(payload.len() as u64, &mut head)
            .expect("a frame header into memory");
        self.ready.extend_from_slice(&head);
        self.ready.extend_from_slice(&payload);
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.inflate {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready.split_to(n));
                // An idle connection keeps no buffer from its last message.
                for b in [&mut this.ready, &mut this.raw] {
                    if b.is_empty() && b.capacity() > 0 {
                        *b = BytesMut::new();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if this.step().map_err(io::Error::other)? {
                continue;
            }
            let mut chunk = [0u8; 8 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: whatever is left goes to tungstenite, which reports a
                // frame cut short.
                let rest = this.raw.split();
                buf.put_slice(&rest[..rest.len().min(buf.remaining())]);
                return Poll::Ready(Ok(()));
            }
            this.raw.extend_from_slice(read.filled());
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn offer(v: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert("sec-websocket-extensions", v.parse().unwrap());
        offered(&h).is_some()
    }

    #[test]
    fn offers_are_accepted_only_in_a_form_the_server_can_honour() {
        assert!(offer("permessage-deflate; client_max_window_bits"));
        assert!(offer("permessage-deflate; client_max_window_bits=10"));
        assert!(offer(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        ));
        assert!(offer("permessage-deflate; server_max_window_bits=15"));
        // A smaller server window is declined, but a later offer in the list is taken.
        assert!(!offer("permessage-deflate; server_max_window_bits=10"));
        assert!(offer(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ));
        assert!(!offer("permessage-deflate; client_max_window_bits=16"));
        assert!(!offer("permessage-deflate; unknown_param"));
        assert!(!offer(
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
        ));
        assert!(!offer("x-webkit-deflate-frame"));
        assert!(offered(&HeaderMap::new()).is_none());
        let mut h = HeaderMap::new();
        h.insert(
            "sec-websocket-extensions",
            "permessage-deflate; server_no_context_takeover"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            offered(&h),
            Some(Offer {
                server_no_context_takeover: true
            })
        );
    }

    #[test]
    fn a_cohort_stream_inflates_with_one_kept_window_and_numbers_its_messages() {
        let cohorts = Cohorts::default();
        let cohort = cohorts.join("c").unwrap();
        // Fresh: a second subscriber joins the same one.
        assert!(Arc::ptr_eq(&cohort, &cohorts.join("c").unwrap()));
        let epoch: Arc<str> = "e1".into();
        let frames: Vec<String> = (0..20)
            .map(|i| {
                format!(
                    "{{\"op\":\"event\",\"offset\":{i},\"data\":{{\"percent\":{}}}}}",
                    i * 5
                )
            })
            .collect();
        let mut inflater = Decompress::new(false);
        let mut total = 0;
        for (i, f) in frames.iter().enumerate() {
            let (seq, bytes) = cohort.deflate(&epoch, i as u64 + 1, f.as_bytes()).unwrap();
            assert_eq!(seq, i as u64 + 1);
            // Another member asking for the same event gets the same bytes and number.
            assert_eq!(
                cohort.deflate(&epoch, i as u64 + 1, f.as_bytes()),
                Some((seq, bytes.clone()))
            );
            total += bytes.len();
            let input = [&bytes[..], &TAIL[..]].concat();
            let mut out = Vec::with_capacity(4096);
            inflater
                .decompress_vec(&input, &mut out, FlushDecompress::Sync)
                .unwrap();
            assert_eq!(out, f.as_bytes());
        }
        // Later messages lean on earlier ones: far smaller than deflating each alone.
        let alone: usize = frames.iter().map(|f| deflate(f.as_bytes()).len()).sum();
        assert!(total * 2 < alone, "{total} with context, {alone} alone");
        // It has deflated: the next subscriber gets a new cohort. Another epoch: refused.
        assert!(!Arc::ptr_eq(&cohort, &cohorts.join("c").unwrap()));
        assert_eq!(cohort.deflate(&"e2".into(), 1, b"x"), None);
    }

    #[test]
    fn a_deflated_message_inflates_back_and_the_limit_holds() {
        let text = "{\"op\":\"event\",\"data\":\"héllo 🦀\"}".repeat(50);
        let d = deflate(text.as_bytes());
        assert!(d.len() < text.len() / 4, "{} of {}", d.len(), text.len());
        assert!(!d.ends_with(&TAIL));
        assert_eq!(inflate(&d, 1 << 20).unwrap(), text.as_bytes());
        // Deflated twice: the same bytes (no state carried between messages).
        assert_eq!(deflate(text.as_bytes()), d);
        assert!(matches!(
            inflate(&d, 100),
            Err(InflateError::TooLarge { max: 100 })
        ));
        assert!(matches!(
            inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Corrupt)
        ));
    }

    /// A client frame: FIN, RSV1, opcode, masked with `key`.
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    async fn through(input: Vec<u8>, max: usize) -> io::Result<Vec<u8>> {
        let mut t = Transport::new(&input[..], true, max);
        let mut out = Vec::new();
        t.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn fragmented_compressed_messages_become_one_plain_frame() {
        let text = b"{\"op\":\"ping\"}".repeat(4);
        let d = deflate(&text);
        let (a, b) = d.split_at(d.len() / 2);
        let mut input = frame(false, true, 1, a, [1, 2, 3, 4]);
        // A ping between the fragments passes through in place.
        input.extend(frame(true, false, 9, b"hi", [5, 6, 7, 8]));
        input.extend(frame(true, false, 0, b, [9, 10, 11, 12]));
        input.extend(frame(true, false, 1, b"plain", [0, 0, 0, 1]));
        let out = through(input, 1 << 16).await.unwrap();
        let ping = frame(true, false, 9, b"hi", [5, 6, 7, 8]);
        assert_eq!(&out[..ping.len()], &ping[..]);
        let rest = &out[ping.len()..];
        let plain = frame(true, false, 1, &text, [0; 4]);
        assert_eq!(&rest[..plain.len()], &plain[..]);
        assert_eq!(
            &rest[plain.len()..],
            &frame(true, false, 1, b"plain", [0, 0, 0, 1])[..]
        );
    }

    /// Hands out `data` a few bytes at a time, as a socket may.
    struct Trickle(Vec<u8>, usize);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let at = self.1;
            let n = (self.0.len() - at).min(7).min(buf.remaining());
            buf.put_slice(&self.0[at..at + n]);
            self.1 += n;
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_arriving_in_pieces_pass_and_inflate_whole() {
        let plain: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let text = "{\"op\":\"publish\",\"data\":\"ünïcode\"}".repeat(300);
        let d = deflate(text.as_bytes());
        let mut input = frame(true, false, 2, &plain, [3, 1, 4, 1]);
        input.extend(frame(true, true, 1, &d, [2, 7, 1, 8]));
        let mut t = Transport::new(Trickle(input, 0), true, 1 << 20);
        let mut out = Vec::new();
        t.read_to_end(&mut out).await.unwrap();
        let first = frame(true, false, 2, &plain, [3, 1, 4, 1]);
        assert_eq!(&out[..first.len()], &first[..]);
        assert_eq!(
            &out[first.len()..],
            &frame(true, false, 1, text.as_bytes(), [0; 4])[..]
        );
    }

    #[tokio::test]
    async fn oversized_or_broken_compressed_messages_are_typed_errors() {
        let big = deflate(&vec![b'a'; 10_000]);
        let e = through(frame(true, true, 1, &big, [1, 1, 1, 1]), 1_000)
            .await
            .unwrap_err();
        assert!(matches!(
            InflateError::of(&e),
            Some(InflateError::TooLarge { max: 1_000 })
        ));
        let e = through(frame(true, true, 1, &[0xff; 8], [1, 1, 1, 1]), 1_000)
            .await
            .unwrap_err();
        assert!(matches!(InflateError::of(&e), Some(InflateError::Corrupt)));
        let mut input = frame(false, true, 1, &big[..4], [1, 1, 1, 1]);
        input.extend(frame(true, false, 1, b"x", [1, 1, 1, 1]));
        let e = through(input, 100_000).await.unwrap_err();
        assert!(matches!(
            InflateError::of(&e),
            Some(InflateError::Protocol(_))
        ));
    }
}

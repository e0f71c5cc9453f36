//! JSON-in, JSON-out entry points to the core for the shared vectors in `tests/vectors/`.
//!
//! Every SDK runs the same vector files through its own binding: the binding exposes these
//! functions, the host language's test runner reads a case, calls them and compares the
//! answer with the case's expectation. The logic stays here, once; only the comparison is
//! written per language.

use serde_json::{Value, json};

use crate::close::classify_close;
use crate::connection::{Connection, ConnectionConfig, Input, Output};
use crate::error::FrameError;
use crate::event::Event;
use crate::frame::{ClientFrame, DEFAULT_MAX_FRAME_BYTES, ServerFrame};
use crate::time::{Duration, Instant};

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn frame_error_kind(e: &FrameError) -> &'static str {
    match e {
        FrameError::TooLarge { .. } => "too_large",
        FrameError::Malformed(_) => "malformed",
        FrameError::MissingOp => "missing_op",
        FrameError::UnknownOp(_) => "unknown_op",
        FrameError::Invalid { .. } => "invalid",
    }
}

/// A `frames.json` case → `{"ok": frame}` or `{"error": kind}`.
pub fn decode_frame(case: &Value) -> Value {
    let text = text_of(&case["text"]);
    let max = case["max_len"]
        .as_u64()
        .map_or(DEFAULT_MAX_FRAME_BYTES, |m| m as usize);
    let encoded = if case["direction"] == "client" {
        ClientFrame::decode(&text, max).map(|f| f.encode())
    } else {
        ServerFrame::decode(&text, max).map(|f| f.encode())
    };
    match encoded {
        Ok(s) => json!({ "ok": serde_json::from_str::<Value>(&s).unwrap_or(Value::Null) }),
        Err(e) => json!({ "error": frame_error_kind(&e) }),
    }
}

/// An `events.json` case → `"valid"` or `{"field", "kind"}`.
pub fn validate_event(case: &Value) -> Value {
    let max = case["max_payload_bytes"]
        .as_u64()
        .map_or(crate::event::DEFAULT_MAX_PAYLOAD_BYTES, |m| m as usize);
    match serde_json::from_value::<Event>(case["event"].clone()) {
        Err(e) if e.to_string().contains("channel") || !case["event"]["channel"].is_string() => {
            json!({ "field": "channel", "kind": "bad_format" })
        }
        Err(e) => json!({ "field": "event", "kind": "wrong_type", "message": e.to_string() }),
        Ok(event) => match event.validate(max) {
            Ok(()) => json!("valid"),
            Err(e) => json!({ "field": e.field, "kind": e.kind }),
        },
    }
}

/// A `close_codes.json` case → the action's name.
pub fn close_action(case: &Value) -> Value {
    let code = case["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(1006);
    serde_json::to_value(classify_close(code)).unwrap_or(Value::Null)
}

/// Replays a `transcripts.json` case step by step on simulated time.
#[derive(Debug)]
pub struct TranscriptRunner {
    connection: Connection,
    start: Instant,
}

impl TranscriptRunner {
    /// A runner for a case's `config` and `seed`; `start` is any instant (times are offsets).
    pub fn new(case: &Value, start: Instant) -> Result<Self, String> {
        let config: ConnectionConfig = serde_json::from_value(case["config"].clone())
            .map_err(|e| format!("bad config: {e}"))?;
        let seed = case["seed"].as_u64().unwrap_or(0);
        Ok(Self {
            connection: Connection::new(config, seed),
            start,
        })
    }

    /// Applies a step (`at_ms`, `input`) → `{"outputs": [...], "next_timeout_ms": n|null}`.
    pub fn step(&mut self, step: &Value) -> Result<Value, String> {
        let now =
            self.start + Duration::from_millis(step["at_ms"].as_u64().ok_or("step without at_ms")?);
        let mut input = step["input"].clone();
        if let Some(text) = input.get_mut("text") {
            *text = Value::String(text_of(text));
        }
        let input: Input = serde_json::from_value(input).map_err(|e| format!("bad input: {e}"))?;
        let mut outputs = Vec::new();
        if let Err(e) = self.connection.handle(input, now) {
            outputs.push(json!({ "rejected": e.code() }));
        }
        while let Some(output) = self.connection.poll() {
            outputs.push(output_json(&output));
        }
        let next = self
            .connection
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.start).as_millis() as u64);
        Ok(json!({ "outputs": outputs, "next_timeout_ms": next }))
    }
}

fn output_json(output: &Output) -> Value {
    match output {
        Output::Send(text) => {
            json!({ "send": serde_json::from_str::<Value>(text).unwrap_or(Value::Null) })
        }
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    }
}

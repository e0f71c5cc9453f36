//! Rust `tracing` events of the Courier crates, forwarded to Python's `logging` (the
//! `courier_client` logger) through a sink set by the Python package.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// A level above every Python level: nothing is sent.
pub(crate) const OFF: u8 = 255;

static SINK: Mutex<Option<Arc<Py<PyAny>>>> = Mutex::new(None);

struct PyLayer {
    level: &'static AtomicU8,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

fn python_level(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::TRACE => 5,
        tracing::Level::DEBUG => 10,
        tracing::Level::INFO => 20,
        tracing::Level::WARN => 30,
        tracing::Level::ERROR => 40,
    }
}

impl<S: tracing::Subscriber> Layer<S> for PyLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !meta.target().starts_with("courier") {
            return;
        }
        let level = python_level(*meta.level());
        if level < self.level.load(Ordering::Relaxed) {
            return;
        }
        let Some(sink) = SINK.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let mut message = Message::default();
        event.record(&mut message);
        let target = meta.target();
        // Never panics at interpreter shutdown: the record is dropped then.
        Python::try_attach(|py| {
            if let Err(e) = sink.call1(py, (level, target, message.0)) {
                e.print(py);
            }
        });
    }
}

/// Routes Courier logs to `sink(level, target, message)`.
pub(crate) fn install(sink: Py<PyAny>, level: &'static AtomicU8) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(sink));
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let subscriber = tracing_subscriber::registry().with(PyLayer { level });
        // The host process may have its own subscriber already: then it keeps the logs.
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

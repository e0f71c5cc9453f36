//! The log filter: the operator's directives, with the libraries that would print secrets
//! capped below the level where they do.

use tracing_subscriber::EnvFilter;

/// Targets that log whole frames or headers at `trace` — a `connect` frame or an
/// `Authorization` header carries a JWT — capped at `debug` whatever the operator asks.
pub const SECRET_BEARING_TARGETS: &[&str] = &["tungstenite", "tokio_tungstenite", "hyper", "h2"];

/// `spec` (`COURIER_LOG` or `log_level`, e.g. `info` or `courier_server=trace`) with every
/// target of [`SECRET_BEARING_TARGETS`] capped at `debug` when the spec asks for `trace`
/// anywhere. An invalid spec falls back to `info`.
pub fn filter(spec: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"));
    // Only `trace` prints frames and headers; a cap at `debug` would otherwise raise these
    // targets above a quieter spec such as `info`.
    if !spec.to_ascii_lowercase().contains("trace") {
        return filter;
    }
    for target in SECRET_BEARING_TARGETS {
        // Added last, so it wins over a directive of the same target in `spec`; a more
        // general one (`trace`) never outranks a per-target directive.
        if let Ok(d) = format!("{target}=debug").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

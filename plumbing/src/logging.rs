//! Log set-up shared by both binaries: `SPILLWAY_LOG` holds `level` and `target=level` pairs
//! (`info`, `spillway_agent=debug,warn`), read with tracing's plain target filter — the agent is
//! small, and a regex engine for log filters is not worth its 200 KiB.

use std::str::FromStr;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Logs to stderr, filtered by `SPILLWAY_LOG` (default `info`); `ansi` colours the output.
pub fn init(ansi: bool) {
    // The embedded broker logs every connection at info, and its router reports clients that
    // simply went away as errors: keep its warnings only, unless asked for.
    let text = std::env::var("SPILLWAY_LOG")
        .unwrap_or_else(|_| "info,rumqttd=warn,rumqttd::router=off".into());
    let (targets, bad) = match Targets::from_str(&text) {
        Ok(t) => (t, None),
        Err(e) => (Targets::new().with_default(tracing::Level::INFO), Some(e)),
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .finish()
        .with(targets)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!(
            "SPILLWAY_LOG=`{text}` is not a log filter ({e}); logging at info. Use e.g. `info` or `spillway_agent=debug,warn`"
        );
    }
}

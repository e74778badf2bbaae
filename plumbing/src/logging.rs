//! Log set-up shared by both binaries: `SPILLWAY_LOG` holds `level` and `target=level` pairs
//! (`info`, `spillway_agent=debug,warn`), read with tracing's plain target filter — the agent is
//! small, and a regex engine for log filters is not worth its 200 KiB. `SPILLWAY_LOG_FORMAT=json`
//! writes one JSON object per line (for Loki, Elasticsearch, `jq`), with each event's fields
//! (`job`, `function`, `node`, …) as keys, so a job is found by its id across binaries.

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
    let format = std::env::var("SPILLWAY_LOG_FORMAT").unwrap_or_default();
    let json = format == "json";
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .finish()
            .with(targets)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .finish()
            .with(targets)
            .try_init();
    }
    if !json && !format.is_empty() && format != "text" {
        tracing::warn!(
            "SPILLWAY_LOG_FORMAT=`{format}` is not a log format; writing text. Use `json` or `text`"
        );
    }
    if let Some(e) = bad {
        tracing::warn!(
            "SPILLWAY_LOG=`{text}` is not a log filter ({e}); logging at info. Use e.g. `info` or `spillway_agent=debug,warn`"
        );
    }
}

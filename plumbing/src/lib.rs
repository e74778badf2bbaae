//! What every Spillway binary needs from its host, and nothing about meshes or jobs:
//! [`atomic`] writes files whole or not at all, [`systemd`] speaks `Type=notify` and the
//! watchdog, [`signal`] waits for Ctrl-C or SIGTERM, [`logging`] sets up `tracing` from
//! `RUST_LOG`, [`metrics`] serves `/metrics`, [`s3`] reads and writes S3-compatible buckets, and [`error_chain`] puts an error
//! and its causes on one line.

pub mod atomic;
pub mod logging;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "s3")]
pub mod s3;
pub mod signal;
pub mod systemd;

pub use signal::shutdown_signal;

/// An error and its causes on one line (libraries such as reqwest hide the useful part in
/// `source()`); a cause already quoted by its parent is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = s.source();
    }
    text
}

/// Milliseconds since the Unix epoch by the wall clock (0 before 1970): for records people
/// read, never for measuring time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

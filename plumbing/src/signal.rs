//! How Spillway's binaries are asked to stop: Ctrl-C or SIGTERM (systemd, `kill`).

use std::future::Future;

/// Listens for SIGINT and SIGTERM from the moment it is called and resolves at the first.
/// Call it before announcing readiness: a handler installed only when the future is first polled
/// leaves a window in which SIGTERM still kills the process without a clean stop.
/// Needs a Tokio runtime (call it from async code or inside `block_on`).
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let Ok(mut term) = term else {
            return std::future::pending().await;
        };
        match int {
            Ok(mut int) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                term.recv().await;
            }
        }
    }
}

//! The HTTP API's listener: at most `[http] max_connections` at once (more are dropped, and
//! counted), a deadline for each request's headers (a client that trickles them
//! in, or holds a connection open saying nothing, is cut off), then hyper serving the router.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::State;
use super::metrics::inc;

/// How long a client may take to send a request's headers, and to start the next one on a
/// kept-alive connection.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(state.config.http_max_connections));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: let some connections end first.
                tracing::warn!("cannot accept an API connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            inc(&state.metrics.api_connections_refused);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("API connection ended: {e}");
            }
            drop(permit);
        });
    }
}

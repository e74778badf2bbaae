//! The HTTP API's listener: at most `[http] max_connections` at once (more are dropped, and
//! counted), TLS when configured (a certificate from the mesh CA, or the operator's), a
//! deadline for the handshake and each request's headers (a client that trickles them in, or
//! holds a connection open saying nothing, is cut off), then hyper serving the router.

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

/// The API's TLS configuration for `[http] tls` (`None`: plain HTTP, on loopback). A
/// certificate from the mesh CA follows CA rotations.
pub fn tls_acceptor(
    config: &crate::config::CoordinatorConfig,
    ca: &super::ca::Authority,
    listen: std::net::SocketAddr,
) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    use crate::config::HttpTls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    config.http_tls.check(listen)?;
    let mut server = match &config.http_tls {
        HttpTls::Off => return Ok(None),
        HttpTls::Mesh { names } => {
            let names = super::ca::Authority::names_for(listen, names);
            ca.listener(spillway_link::live::Clients::NotAsked, names)
                .map_err(|e| e.to_string())?
                .config()
                .map_err(|e| e.to_string())?
        }
        HttpTls::Files { cert, key } => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("http.cert_file {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("http.key_file {}: {e}", key.display()))?;
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("the API's certificate and key do not go together: {e}"))?
        }
    };
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` resolves.
pub async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(state.config.http_max_connections));
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
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
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => serve_connection(stream, service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, service).await,
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
                        Err(_) => Err("no TLS handshake within the header deadline".into()),
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!("API connection ended: {e}");
            }
            drop(permit);
        });
    }
}

async fn serve_connection<S>(stream: S, service: TowerToHyperService<Router>) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| e.to_string())
}

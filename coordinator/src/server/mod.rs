//! The coordinator server: durable state ([`store`]), its CA ([`ca`]), the QUIC endpoint for
//! agents ([`quic`]), the live load view ([`view`]), deployments ([`deploy`], [`apply`]) and
//! the HTTP API for the CLI ([`http`]).

pub mod api_error;
pub mod apply;
pub mod backup_api;
pub mod blobs;
pub mod broker;
pub mod ca;
pub mod deploy;
pub mod events;
pub mod feed;
pub mod feed_api;
pub mod handovers;
pub mod http;
pub mod invoke;
pub mod join_limit;
pub mod listener;
pub mod metrics;
pub mod mqtt;
pub mod node_calls;
pub mod notified;
pub mod oscar_api;
pub mod oscar_jobs;
pub mod oscar_services;
pub mod oscar_system;
pub mod placing;
pub mod presign;
pub mod quic;
pub mod replicas;
pub mod scope;
pub mod store;
pub mod submit;
pub mod supervisor;
pub mod upgrades;
pub mod view;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use spillway_link::token::JoinToken;
use tokio::sync::watch;

use crate::config::CoordinatorConfig;
use ca::{Authority, CaError};
use metrics::Metrics;
use spillway_api::tokens::{TokenGrant, TokenRecord};
use store::{Store, StoreError};
use view::View;

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum ServerError {
    /// cannot create the state folder {path}: {source}
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// {0}
    Store(#[from] StoreError),
    /// {0}
    Ca(#[from] CaError),
    /// QUIC endpoint: {0}
    Tls(#[from] spillway_link::tls::TlsError),
    /// cannot listen on {addr} ({what}): {source}; is another coordinator running? change it in the config
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// {0}
    Broker(#[from] broker::BrokerError),
    /// cannot write {path}: {source}
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// HTTPS for the API: {0}
    HttpTls(String),
    /// HTTPS to replicas: {0}
    ReplicaHttp(String),
    /// the admin token in {path} is {length} characters long, shorter than the 32 the API asks for: put a longer random one there, or delete the file and a new one is made at start
    WeakToken { path: PathBuf, length: usize },
}

pub use spillway_plumbing::now_ms;

/// Everything the endpoint tasks and API handlers share.
#[derive(Debug)]
pub struct State {
    pub config: CoordinatorConfig,
    pub store: Store,
    pub ca: Authority,
    pub view: View,
    pub metrics: Metrics,
    /// Job and node changes, for `get events` and `--watch`.
    pub feed: feed::Feed,
    /// Bumped whenever the function set changes; every session recomputes its node's share.
    pub deployments: watch::Sender<u64>,
    /// Jobs handed over by their origins, and the sessions messages about them go to.
    pub handovers: handovers::Handovers,
    pub blobs: blobs::Blobs,
    /// Beats every time the lease loop goes round (it takes the hand-over lock), for the systemd
    /// watchdog.
    pub heartbeat: spillway_plumbing::systemd::Heartbeat,
    admin_hash: [u8; 32],
    quic_addr: SocketAddr,
    /// Blob frames (up to 64 MiB each) buffered at once, from all members together.
    pub blob_frames: tokio::sync::Semaphore,
    /// How often joins may be tried.
    pub join_limit: std::sync::Mutex<join_limit::JoinLimit>,
    /// The embedded MQTT broker's plain and TLS addresses, when they are served.
    pub mqtt_addr: Option<SocketAddr>,
    pub mqtts_addr: Option<SocketAddr>,
    /// Bumped whenever an MQTT user is added, replaced or removed (their connections look again).
    pub mqtt_users: std::sync::atomic::AtomicU64,
    /// The HTTP API's bound address.
    pub http_addr: SocketAddr,
    /// Presigned URLs for executors outside the mesh, and OSCAR service tokens.
    pub presigner: presign::Presigner,
    /// Jobs placed on replicas outside the mesh.
    pub delegations: replicas::Delegations,
    /// Bucket notifications made into jobs lately (a redelivery is not a second run).
    pub notified: notified::Notified,
    /// Agent releases and their rollouts.
    pub upgrades: upgrades::Upgrades,
}

impl State {
    /// `/metrics` as OpenMetrics text: the counters, then the gauges read now.
    pub fn render_metrics(&self) -> String {
        self.metrics.render(metrics::Scrape::of(self))
    }

    /// A one-time join token valid for `ttl_secs` for a new node, stored hashed.
    pub fn create_token(&self, ttl_secs: u64, description: &str) -> Result<(String, u64), String> {
        let (mut tokens, expires) =
            self.create_tokens(1, ttl_secs, description, &TokenGrant::default())?;
        Ok((tokens.pop().unwrap_or_default(), expires))
    }

    /// `count` one-time join tokens valid for `ttl_secs`, granting `grant`, stored hashed in
    /// one commit.
    pub fn create_tokens(
        &self,
        count: u32,
        ttl_secs: u64,
        description: &str,
        grant: &TokenGrant,
    ) -> Result<(Vec<String>, u64), String> {
        let now = now_ms();
        let expires_at_ms = now.saturating_add(ttl_secs.saturating_mul(1000));
        let record = TokenRecord {
            created_at_ms: now,
            expires_at_ms,
            description: description.to_owned(),
            used_by: None,
            grant: grant.clone(),
            revoked_at_ms: None,
        };
        let mut texts = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..count.max(1) {
            let token = JoinToken::generate(&self.ca.fingerprint())?;
            rows.push((token.secret_hash(), record.clone()));
            texts.push(token.to_string());
        }
        self.store.put_tokens(&rows).map_err(|e| e.to_string())?;
        Ok((texts, expires_at_ms))
    }

    /// The API's URL as this host reaches it (`0.0.0.0` means "this host").
    pub fn api_url(&self) -> String {
        let addr = self.http_addr;
        let host = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        let scheme = match self.config.http_tls {
            crate::config::HttpTls::Off => "http",
            _ => "https",
        };
        format!("{scheme}://{host}")
    }

    /// The QUIC address to give agents (the bound one; `0.0.0.0` means "this host").
    pub fn advertised_quic(&self) -> String {
        self.quic_addr.to_string()
    }
}

/// A started coordinator: both listeners bound, nothing served until [`Coordinator::run`].
#[derive(Debug)]
pub struct Coordinator {
    pub state: Arc<State>,
    endpoint: quinn::Endpoint,
    http: tokio::net::TcpListener,
    http_tls: Option<Arc<rustls::ServerConfig>>,
    /// `[metrics] listen`'s listener, when set.
    metrics: Option<tokio::net::TcpListener>,
    mqtt: Option<mqtt::Mqtt>,
    /// The API token, for the client config written next to the state.
    pub admin_token: String,
}

impl Coordinator {
    pub async fn start(config: CoordinatorConfig) -> Result<Self, ServerError> {
        let dir = config.state_dir.clone();
        // The state holds the CA's key, tokens and functions' credentials: its owner's only.
        let private = |path: &std::path::Path, mode: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
                |source| ServerError::StateDir {
                    path: path.to_owned(),
                    source,
                },
            )
        };
        std::fs::create_dir_all(&dir).map_err(|source| ServerError::StateDir {
            path: dir.clone(),
            source,
        })?;
        private(&dir, 0o700)?;
        let store = Store::open(&config.store_path())?;
        private(&config.store_path(), 0o600)?;
        let ca = Authority::load_or_create(&dir.join("ca"), &config.name)?;
        let admin_token = load_or_create_admin_token(&dir)?;
        let quic_live = ca.listener(spillway_link::live::Clients::OptionalEndedToo, Vec::new())?;
        let server = spillway_link::tls::quic_server(&quic_live)?;
        let endpoint = quinn::Endpoint::server(server, config.quic_listen).map_err(|source| {
            ServerError::Bind {
                what: "QUIC for agents",
                addr: config.quic_listen,
                source,
            }
        })?;
        let http = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "HTTP API",
                addr: config.http_listen,
                source,
            })?;
        let quic_addr = endpoint.local_addr().unwrap_or(config.quic_listen);
        let mqtt = mqtt::Mqtt::start(&config, &ca).await?;
        let (mqtt_addr, mqtts_addr) = mqtt
            .as_ref()
            .map_or((None, None), |m| (m.plain_addr, m.tls_addr));
        let blobs_dir = dir.join("blobs");
        let blobs = blobs::Blobs::open(&blobs_dir).map_err(|source| ServerError::StateDir {
            path: blobs_dir,
            source,
        })?;
        let handovers = handovers::Handovers::restore(config.max_hops, store.handovers()?);
        let upgrades = upgrades::Upgrades::load(&store)?;
        for digest in upgrades.blobs() {
            blobs.pin(digest);
        }
        let presigner =
            presign::Presigner::load_or_create(&dir).map_err(|source| ServerError::Write {
                path: dir.join("presign.key"),
                source,
            })?;
        let http_addr = http.local_addr().unwrap_or(config.http_listen);
        let metrics =
            match config.metrics_listen {
                None => None,
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| ServerError::Bind {
                        what: "metrics",
                        addr,
                        source,
                    },
                )?),
            };
        let http_tls =
            listener::tls_acceptor(&config, &ca, http_addr).map_err(ServerError::HttpTls)?;
        let delegations = replicas::Delegations::new(config.replicas.timeout)
            .map_err(ServerError::ReplicaHttp)?;
        let state = Arc::new(State {
            blob_frames: tokio::sync::Semaphore::new(8),
            join_limit: std::sync::Mutex::new(
                join_limit::JoinLimit::new(std::time::Instant::now()),
            ),
            http_addr,
            presigner,
            delegations,
            notified: notified::Notified::default(),
            upgrades,
            admin_hash: Sha256::digest(admin_token.as_bytes()).into(),
            view: View::new(config.liveness),
            metrics: Metrics::default(),
            feed: feed::Feed::default(),
            deployments: watch::channel(0).0,
            handovers,
            blobs,
            heartbeat: spillway_plumbing::systemd::Heartbeat::default(),
            store,
            ca,
            config,
            quic_addr,
            mqtt_addr,
            mqtts_addr,
            mqtt_users: Default::default(),
        });
        Ok(Self {
            state,
            endpoint,
            http,
            http_tls,
            metrics,
            mqtt,
            admin_token,
        })
    }

    pub fn quic_addr(&self) -> SocketAddr {
        self.state.quic_addr
    }

    /// Where `[metrics] listen` serves, when set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .unwrap_or(self.state.config.http_listen)
    }

    /// The client configuration the CLI needs to reach this coordinator: its URL, the admin
    /// token and, over HTTPS with the mesh CA's certificate, that CA (the CLI pins it).
    pub fn client_config(&self) -> String {
        let mut text = format!(
            "{}\ncoordinator = \"{}\"\ntoken = \"{}\"\n",
            spillway_api::WRITTEN_BY_MARKER,
            self.state.api_url(),
            self.admin_token
        );
        if matches!(
            self.state.config.http_tls,
            crate::config::HttpTls::Mesh { .. }
        ) {
            text.push_str(&format!("ca = '''\n{}'''\n", self.state.ca.cert_pem()));
        }
        text
    }

    /// Serves agents and the API until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mqtt = self
            .mqtt
            .take()
            .map(|m| m.serve(self.state.clone()))
            .unwrap_or_default();
        let quic = tokio::spawn(quic::serve(self.state.clone(), self.endpoint.clone()));
        let leases = tokio::spawn(expire_leases(self.state.clone()));
        let delegations = tokio::spawn(replicas::driver::run(self.state.clone()));
        let rollouts = tokio::spawn(upgrades::drive(self.state.clone()));
        let scrapes = self.metrics.take().map(|listener| {
            let state = self.state.clone();
            tokio::spawn(spillway_plumbing::metrics::serve(
                listener,
                Arc::new(move || state.render_metrics()),
            ))
        });
        let app = http::router(self.state.clone());
        listener::serve(self.state.clone(), self.http, self.http_tls, app, shutdown).await;
        self.endpoint
            .close(0u32.into(), b"coordinator shutting down");
        quic.abort();
        leases.abort();
        if let Some(scrapes) = scrapes {
            scrapes.abort();
        }
        delegations.abort();
        rollouts.abort();
        for task in mqtt {
            task.abort();
        }
        self.endpoint.wait_idle().await;
    }
}

/// Uploads nobody claimed for this long are swept from the blob store (an offer whose frame
/// never arrived, a result whose peer died before reporting it).
const BLOB_SWEEP_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Places again the jobs of peers that stayed away longer than the lease grace period, and
/// now and then sweeps unclaimed blobs.
async fn expire_leases(state: Arc<State>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut rounds = 0u64;
    loop {
        tick.tick().await;
        state.expire_leases();
        state.remove_unused_blobs();
        state.heartbeat.beat();
        rounds += 1;
        // Hourly, and soon after start: finished jobs past `[retention]`.
        if rounds % 7_200 == 1 {
            let state = state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let r = state.config.retention;
                let max_age = u64::try_from(r.keep_finished.as_millis()).unwrap_or(u64::MAX);
                match state
                    .store
                    .prune_jobs(now_ms(), max_age, r.keep_finished_jobs)
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("{n} finished jobs past [retention] forgotten"),
                    Err(e) => tracing::warn!("cannot forget finished jobs past [retention]: {e}"),
                }
            })
            .await;
        }
        if rounds.is_multiple_of(120) {
            let swept = state.sweep_blobs(BLOB_SWEEP_AGE);
            if swept > 0 {
                tracing::info!("swept {swept} unclaimed blobs from the blob store");
            }
        }
    }
}

/// The shortest admin token accepted: 128 bits as hex, as the coordinator makes them.
pub const MIN_ADMIN_TOKEN: usize = 32;

fn load_or_create_admin_token(dir: &std::path::Path) -> Result<String, ServerError> {
    let path = dir.join("admin.token");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if token.len() < MIN_ADMIN_TOKEN {
            return Err(ServerError::WeakToken {
                path,
                length: token.len(),
            });
        }
        return Ok(token);
    }
    let token = JoinToken::generate(&[0; 32])
        .map(|t| hex::encode(t.secret))
        .map_err(|e| ServerError::Write {
            path: path.clone(),
            source: std::io::Error::other(format!("no randomness for the admin token: {e}")),
        })?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(token.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|source| ServerError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(token)
}

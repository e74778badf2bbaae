//! The embedded MQTT broker as clients see it: rumqttd on a loopback port that only the
//! gateway may log in to, and the gateway's listeners (plain MQTT and MQTT over TLS with a
//! mesh-CA certificate) where every client proves who it is ([`acl`], [`gateway`]).
//!
//! A broker fault stays in the broker: rumqttd runs in a process of its own ([`process`]),
//! started again when it stops; the gateway answers CONNACK "server unavailable" meanwhile,
//! and the coordinator serves on.

pub mod acl;
pub mod gateway;
pub mod process;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::State;
use super::broker::BrokerError;
use crate::config::CoordinatorConfig;
use acl::{Grants, Principal, RetainedQuota};
use gateway::{Authority, Gateway};

/// The broker and the gateway's bound listeners, served from [`Mqtt::serve`].
pub struct Mqtt {
    gateway: Arc<Gateway>,
    plain: Option<TcpListener>,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    pub plain_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("plain_addr", &self.plain_addr)
            .field("tls_addr", &self.tls_addr)
            .finish()
    }
}

impl Mqtt {
    /// Starts rumqttd on loopback and binds the listeners `config` asks for (none: `None`).
    pub async fn start(
        config: &CoordinatorConfig,
        ca: &super::ca::Authority,
    ) -> Result<Option<Self>, BrokerError> {
        let m = &config.mqtt;
        if config.mqtt_listen.is_none() && m.tls_listen.is_none() {
            return Ok(None);
        }
        let secret =
            spillway_link::token::JoinToken::generate(&[0; 32]).map_err(BrokerError::Start)?;
        let login = ("spillway-gateway".to_owned(), hex::encode(secret.secret));
        // A loopback port for the broker process (it binds it again at every restart).
        let internal = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .and_then(|l| l.local_addr())
            .map_err(|e| BrokerError::Start(format!("no loopback port for the broker: {e}")))?;
        process::supervise(process::BrokerOrder {
            listen: internal,
            user: login.0.clone(),
            password: login.1.clone(),
            max_payload: m.max_payload,
            max_inflight: m.max_inflight,
        })
        .await?;
        let gateway = Arc::new(Gateway::new(
            internal,
            login,
            m.max_payload,
            m.max_connections,
            RetainedQuota::new(m.max_retained, m.max_retained_bytes),
        ));
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BrokerError::Bind { addr, source })
        };
        let plain = match config.mqtt_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let tls = match m.tls_listen {
            Some(addr) => {
                // Follows CA rotations: members present certificates from either CA meanwhile.
                let names = super::ca::Authority::names_for(addr, &m.tls_names);
                let server = ca
                    .listener(spillway_link::live::Clients::Optional, names)
                    .and_then(|live| {
                        live.config()
                            .map_err(|e| super::ca::CaError::Request(e.to_string()))
                    })
                    .map_err(|e| BrokerError::Start(e.to_string()))?;
                Some((
                    bind(addr).await?,
                    tokio_rustls::TlsAcceptor::from(Arc::new(server)),
                ))
            }
            None => None,
        };
        let plain_addr = plain.as_ref().and_then(|l| l.local_addr().ok());
        let tls_addr = tls.as_ref().and_then(|(l, _)| l.local_addr().ok());
        if let Some(addr) = plain_addr
            && !addr.ip().is_loopback()
        {
            tracing::warn!(
                "plain MQTT on {addr}: passwords cross the network in clear; prefer [mqtt] tls_listen"
            );
        }
        if m.allow_anonymous {
            tracing::warn!(
                "anonymous MQTT clients may publish and subscribe to anything (loopback only, [mqtt] allow_anonymous)"
            );
        }
        Ok(Some(Self {
            gateway,
            plain,
            tls,
            plain_addr,
            tls_addr,
        }))
    }

    /// Serves both listeners with `state` deciding who may do what.
    pub fn serve(self, state: Arc<State>) -> Vec<tokio::task::JoinHandle<()>> {
        let authority = Arc::new(Judge(state));
        let mut tasks = Vec::new();
        if let Some(l) = self.plain {
            tasks.push(tokio::spawn(self.gateway.clone().serve(
                l,
                None,
                authority.clone(),
            )));
        }
        if let Some((l, acceptor)) = self.tls {
            tasks.push(tokio::spawn(self.gateway.clone().serve(
                l,
                Some(acceptor),
                authority,
            )));
        }
        tasks
    }
}

/// The coordinator's state as the gateway's authority.
struct Judge(Arc<State>);

impl Authority for Judge {
    fn generation(&self) -> u64 {
        (*self.0.deployments.borrow())
            .wrapping_add(self.0.mqtt_users.load(std::sync::atomic::Ordering::Relaxed) << 32)
    }

    fn node_by_cert(&self, fingerprint: &[u8; 32]) -> Option<String> {
        match self.0.store.node_by_cert(&hex::encode(fingerprint)) {
            Ok(node) => node.map(|n| n.name),
            Err(e) => {
                tracing::error!("MQTT: cannot look up a node certificate: {e}");
                None
            }
        }
    }

    fn user_login(&self, name: &str, password: &str) -> bool {
        let Ok(Some(user)) = self.0.store.mqtt_user(name) else {
            return false;
        };
        let hash = hex::encode(Sha256::digest(password.as_bytes()));
        ring_eq(hash.as_bytes(), user.password_hash.as_bytes())
    }

    fn grants(&self, who: &Principal) -> Option<Grants> {
        match who {
            Principal::Anonymous => self.0.config.mqtt.allow_anonymous.then(Grants::everything),
            Principal::User(name) => {
                let user = self.0.store.mqtt_user(name).ok()??;
                Some(Grants {
                    publish: user.publish,
                    subscribe: user.subscribe,
                })
            }
            Principal::Node(name) => {
                let node = self.0.store.node(name).ok()??;
                let functions = self.0.store.functions().ok()?;
                Some(node_grants(&node, &functions))
            }
        }
    }

    fn refused(&self, reason: &'static str) {
        self.0.metrics.mqtt_refused(reason);
    }
}

/// A node subscribes to the triggers and publishes to the MQTT outputs of its functions.
pub fn node_grants(
    node: &super::store::NodeRecord,
    functions: &[super::store::FunctionRecord],
) -> Grants {
    let mut grants = Grants::default();
    for f in functions.iter().filter(|f| super::deploy::selects(f, node)) {
        for t in &f.def.triggers {
            let spillway_proto::fdl::Trigger::Mqtt(m) = t;
            grants.subscribe.push(m.topic.clone());
        }
        for o in &f.def.mqtt_outputs {
            grants.publish.push(o.topic.clone());
        }
    }
    grants.subscribe.sort();
    grants.subscribe.dedup();
    grants.publish.sort();
    grants.publish.dedup();
    grants
}

/// Compares secrets' hashes in time independent of where they differ.
fn ring_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

//! The agent's MQTT client (rumqttc): subscriptions for functions' MQTT triggers, messages
//! handed to the engine and acknowledged only once their jobs are journaled, and a publisher
//! for MQTT outputs that waits for the broker's acknowledgement.
//!
//! The session is persistent (`clean_session = false`, a stable client id), so a broker keeps
//! the QoS 1 messages published while the agent is down and delivers them when it returns.

pub mod arrival;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};

pub use arrival::Delivery;
use spillway_agent_config::MqttSettings;

/// MQTT's largest packet: rumqttc must never refuse one (a refused packet drops the
/// connection and the broker re-sends it forever); `[mqtt] max_payload` is applied per message.
const MQTT_MAX_PACKET: usize = 268_435_455;

/// A message for the engine; `done` is answered once its jobs are journaled.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub delivery: Delivery,
    pub done: oneshot::Sender<()>,
}

/// Topic filters to subscribe to, with their QoS.
pub type Subscriptions = BTreeMap<String, u8>;

/// Publishes output messages one at a time and waits for the broker to acknowledge each.
#[derive(Debug, Clone)]
pub struct Publisher {
    client: AsyncClient,
    waiting: Arc<Mutex<Option<Waiting>>>,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
    timeout: Duration,
    broker: String,
}

#[derive(Debug)]
struct Waiting {
    packet_id: Option<u16>,
    done: oneshot::Sender<()>,
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Publisher {
    /// Publishes `payload`; with QoS 1 or 2, returns once the broker has it.
    pub async fn publish(
        &self,
        topic: &str,
        level: u8,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let _turn = self.one_at_a_time.lock().await;
        let (done, acked) = oneshot::channel();
        if level > 0 {
            *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = Some(Waiting {
                packet_id: None,
                done,
            });
        }
        self.client
            .publish(topic, qos(level), retain, payload)
            .await
            .map_err(|e| format!("cannot publish to {topic} on {}: {e}", self.broker))?;
        if level == 0 {
            return Ok(());
        }
        let result = tokio::time::timeout(self.timeout, acked).await;
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match result {
            Ok(Ok(())) => Ok(()),
            _ => Err(format!(
                "the MQTT broker {} did not acknowledge the message on `{topic}` within {}s (is it up? see [mqtt] in agent.toml)",
                self.broker,
                self.timeout.as_secs()
            )),
        }
    }

    fn sent(&self, packet_id: u16) {
        if let Some(w) = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
            && w.packet_id.is_none()
            && packet_id != 0
        {
            w.packet_id = Some(packet_id);
        }
    }

    fn acknowledged(&self, packet_id: u16) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.as_ref().and_then(|w| w.packet_id) == Some(packet_id)
            && let Some(w) = waiting.take()
        {
            let _ = w.done.send(());
        }
    }
}

/// Why the MQTT client cannot start.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum MqttError {
    /// {0}
    Settings(String),
    /// cannot read the MQTT CA file {path}: {message}
    Ca {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Connects (in the background, reconnecting forever) and returns the publisher. Messages on
/// the subscribed filters go to `incoming`; `subscriptions` may change at any time.
pub fn start(
    settings: &MqttSettings,
    identity: Option<&crate::mesh::Membership>,
    state_dir: &std::path::Path,
    subscribed_file: std::path::PathBuf,
    subscriptions: watch::Receiver<Subscriptions>,
    incoming: mpsc::Sender<Incoming>,
) -> Result<Publisher, MqttError> {
    let mut options = MqttOptions::new(&settings.client_id, &settings.host, settings.port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(settings.keep_alive)
        .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET);
    if let Some(user) = &settings.username {
        let password = settings.password().map_err(MqttError::Settings)?;
        options.set_credentials(user, password.unwrap_or_default());
    }
    match (settings.mesh_identity, identity) {
        (true, Some(_)) => {
            // Read at each handshake: after a renewal over the mesh, the coordinator accepts
            // only the new certificate, and this client reconnects for as long as the agent runs.
            // So are the CAs: after a CA rotation the broker presents a chain only the new CA
            // verifies.
            let (trust_dir, state_dir) = (state_dir.to_owned(), state_dir.to_owned());
            let config = spillway_link::tls::stream_member(
                Box::new(move || crate::mesh::Membership::load(&trust_dir).map(|m| m.ca_der)),
                Box::new(move || {
                    crate::mesh::Membership::load(&state_dir).map(|m| (m.cert_der, m.key_der))
                }),
            )
            .map_err(|e| MqttError::Settings(format!("mqtt.mesh_identity: {e}")))?;
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
            ));
        }
        (true, None) => {
            return Err(MqttError::Settings(
                "mqtt.mesh_identity: this node has not joined a coordinator yet (spillway-agent join), so it has no identity to prove".into(),
            ));
        }
        (false, _) if settings.tls => {
            options.set_transport(rumqttc::Transport::tls_with_config(tls_config(settings)?));
        }
        (false, _) => {}
    }
    let broker = format!(
        "{}://{}:{}",
        if settings.tls { "mqtts" } else { "mqtt" },
        settings.host,
        settings.port
    );
    let (client, eventloop) = AsyncClient::new(options, 64);
    let publisher = Publisher {
        client: client.clone(),
        waiting: Arc::default(),
        one_at_a_time: Arc::default(),
        timeout: settings.publish_timeout,
        broker: broker.clone(),
    };
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    tokio::spawn(acknowledge_in_order(client.clone(), acks_rx));
    tokio::spawn(follow_subscriptions(
        client,
        subscriptions.clone(),
        subscribed_file,
    ));
    tokio::spawn(drive(
        eventloop,
        publisher.clone(),
        subscriptions,
        incoming,
        acks_tx,
        broker,
        if settings.mesh_identity {
            "the coordinator's broker did not accept this node's mesh certificate: is the node still a member (`spillway get nodes`)? A removed node joins again with a token from `spillway token create --node NAME`"
        } else {
            "check [mqtt] username and password in agent.toml (and the broker's ACLs)"
        },
    ));
    Ok(publisher)
}

fn tls_config(settings: &MqttSettings) -> Result<rumqttc::TlsConfiguration, MqttError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let path = settings
        .ca_file
        .clone()
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    let ca_error = |message: String| MqttError::Ca {
        path: path.clone(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path).map_err(|e| ca_error(e.to_string()))? {
        let cert = cert.map_err(|e| ca_error(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ca_error(format!("a certificate in it is invalid: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| MqttError::Settings(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

/// Acknowledges messages in the order they arrived (as MQTT asks), each once the engine has
/// journaled it. A message the engine dropped (it is stopping) is never acknowledged, so the
/// broker delivers it again next time.
async fn acknowledge_in_order(
    client: AsyncClient,
    mut acks: mpsc::UnboundedReceiver<(rumqttc::Publish, oneshot::Receiver<()>)>,
) {
    while let Some((publish, journaled)) = acks.recv().await {
        if journaled.await.is_err() {
            return;
        }
        if client.ack(&publish).await.is_err() {
            return;
        }
    }
}

/// Subscribes to filters that appear and unsubscribes from those that go. The broker keeps a
/// persistent session's subscriptions across restarts, so what was subscribed is remembered in
/// `subscribed_file`: a filter no function wants any more is unsubscribed at the next start.
async fn follow_subscriptions(
    client: AsyncClient,
    mut wanted: watch::Receiver<Subscriptions>,
    subscribed_file: std::path::PathBuf,
) {
    let mut current: Subscriptions = std::fs::read(&subscribed_file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    loop {
        let next = wanted.borrow_and_update().clone();
        for (filter, level) in &next {
            if current.get(filter) != Some(level) {
                let _ = client.subscribe(filter.clone(), qos(*level)).await;
            }
        }
        for filter in current.keys().filter(|f| !next.contains_key(*f)) {
            let _ = client.unsubscribe(filter.clone()).await;
        }
        if next != current {
            let text = serde_json::to_vec(&next).unwrap_or_default();
            if let Err(e) = spillway_plumbing::atomic::write_whole(&subscribed_file, &text, 0o644) {
                tracing::warn!(
                    "cannot remember the MQTT subscriptions in {}: {e}",
                    subscribed_file.display()
                );
            }
        }
        current = next;
        if wanted.changed().await.is_err() {
            return;
        }
    }
}

async fn drive(
    mut eventloop: EventLoop,
    publisher: Publisher,
    subscriptions: watch::Receiver<Subscriptions>,
    incoming: mpsc::Sender<Incoming>,
    acks: mpsc::UnboundedSender<(rumqttc::Publish, oneshot::Receiver<()>)>,
    broker: String,
    refused_hint: &'static str,
) {
    let mut connection = 0u64;
    let mut backoff = Duration::from_millis(200);
    let mut down_since_logged = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                connection = crate::journal::now_ms().max(connection + 1);
                backoff = Duration::from_millis(200);
                down_since_logged = false;
                tracing::info!(
                    broker = %broker,
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                if !ack.session_present {
                    // A new session has no subscriptions: ask again for what is wanted.
                    let wanted: Vec<_> = subscriptions
                        .borrow()
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos(*q)))
                        .collect();
                    if !wanted.is_empty() {
                        let client = publisher.client.clone();
                        tokio::spawn(async move { client.subscribe_many(wanted).await });
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let (done, journaled) = oneshot::channel();
                let message = Incoming {
                    topic: publish.topic.clone(),
                    payload: publish.payload.clone(),
                    qos: publish.qos as u8,
                    retain: publish.retain,
                    delivery: Delivery {
                        dup: publish.dup,
                        packet_id: publish.pkid,
                        connection,
                    },
                    done,
                };
                // Waiting here is the back-pressure: the broker keeps what the engine cannot
                // take yet.
                if incoming.send(message).await.is_err() {
                    return;
                }
                if publish.qos != QoS::AtMostOnce {
                    let _ = acks.send((publish, journaled));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    tracing::error!(broker = %broker, "the MQTT broker refused a subscription (check the topic filters and the broker's ACLs)");
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(packet_id))) => publisher.sent(packet_id),
            Ok(Event::Incoming(Packet::PubAck(ack))) => publisher.acknowledged(ack.pkid),
            Ok(Event::Incoming(Packet::PubComp(ack))) => publisher.acknowledged(ack.pkid),
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                // Wrong credentials do not fix themselves quickly: say so every time, slowly.
                tracing::error!(broker = %broker, "the MQTT broker refused this agent ({code:?}): {refused_hint}; retrying");
                down_since_logged = true;
                tokio::time::sleep(backoff.max(Duration::from_secs(5))).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                if !down_since_logged {
                    tracing::warn!(broker = %broker, "MQTT broker unreachable ({e}); retrying");
                    down_since_logged = true;
                } else {
                    tracing::debug!(broker = %broker, "MQTT reconnect failed: {e}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

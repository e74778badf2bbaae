//! The embedded MQTT broker (rumqttd): `spillway up` and `[mqtt] listen` need no Mosquitto.
//! It keeps persistent sessions, so an agent that was away gets the QoS 1 messages published
//! meanwhile. In memory: a coordinator restart loses messages not yet delivered (an external
//! broker with persistence, such as Mosquitto, does not).
//!
//! The coordinator runs it on loopback behind [`super::mqtt`]'s gateway, which alone knows its
//! login; [`start`] without a login is for benchmarks of the broker itself.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the broker cannot start.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum BrokerError {
    /// cannot listen for MQTT on {addr}: {source} (another broker, such as Mosquitto, may have the port: pass `spillway up --mqtt ADDR` or set [mqtt] listen to use another, or `spillway up --mqtt-broker URL` to use that broker)
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// cannot start the embedded MQTT broker: {0}
    Start(String),
}

/// The largest message the embedded broker accepts.
pub const MAX_PAYLOAD: usize = 32 << 20;

/// Starts an open broker (no login) on `listen`: for measuring the broker alone.
pub fn start(listen: SocketAddr) -> Result<SocketAddr, BrokerError> {
    start_with(listen, None, MAX_PAYLOAD, 100)
}

/// Starts the broker behind the gateway: only `login` may connect.
pub fn start_internal(
    listen: SocketAddr,
    login: &(String, String),
    max_payload: usize,
    max_inflight: u16,
) -> Result<SocketAddr, BrokerError> {
    start_with(listen, Some(login), max_payload, max_inflight)
}

/// Starts the broker on its own threads (rumqttd runs its own runtimes) and returns the bound
/// address once it accepts connections.
fn start_with(
    listen: SocketAddr,
    login: Option<&(String, String)>,
    max_payload: usize,
    max_inflight: u16,
) -> Result<SocketAddr, BrokerError> {
    // rumqttd binds inside its thread and only logs a failure: find a busy port here, where the
    // error can still stop `spillway up`. Port 0 is resolved to a free port the same way.
    let probe = std::net::TcpListener::bind(listen).map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    let addr = probe.local_addr().map_err(|source| BrokerError::Bind {
        addr: listen,
        source,
    })?;
    drop(probe);
    let server = ServerSettings {
        name: "spillway-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            // The gateway's own limit is the payload; this one counts the whole packet.
            max_payload_size: max_payload.saturating_add(64 << 10),
            max_inflight_count: max_inflight.into(),
            auth: login.map(|(u, p)| HashMap::from([(u.clone(), p.clone())])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_000,
            max_outgoing_packet_count: 200,
            // Messages kept per topic filter: 10 segments of 8 MiB.
            max_segment_size: 8 << 20,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!("the embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| BrokerError::Start(e.to_string()))?;
    // Ready when it accepts a connection (it binds on its own thread).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(BrokerError::Start(format!(
                "it does not accept connections on {addr}"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    tracing::info!("embedded MQTT broker on mqtt://{addr}");
    Ok(addr)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_taken_port_is_refused_with_what_to_do() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = super::start(addr).expect_err("port in use").to_string();
        assert!(
            err.contains(&addr.to_string()) && err.contains("--mqtt ADDR"),
            "{err}"
        );
    }
}

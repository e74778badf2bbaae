//! What the coordinator's protocol tests share: a member's QUIC connection and its Hello.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use spillway_link::membership::Membership;
use spillway_proto::wire::{AgentFrame, COORDINATOR_SERVER_NAME, Capacity, Hello, Version};

/// A mutual-TLS connection to the coordinator at `quic` with `m`'s certificate.
pub async fn member_connection(quic: SocketAddr, m: &Membership) -> quinn::Connection {
    let tls = spillway_link::tls::member(&m.ca_der, m.cert_der.clone(), m.key_der.clone()).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .connect_with(tls, quic, COORDINATOR_SERVER_NAME)
        .unwrap()
        .await
        .unwrap()
}

/// The Hello an x86_64 test agent with no deployment says.
pub fn hello(version: Version) -> AgentFrame {
    AgentFrame::Hello(Hello {
        version,
        agent_version: "test".into(),
        cluster_id: None,
        labels: Default::default(),
        capacity: Capacity::default(),
        deployment: [0; 32],
        arch: "x86_64".into(),
    })
}

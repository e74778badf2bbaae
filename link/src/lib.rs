//! Spillway's QUIC transport, shared by the agent and the coordinator.
//!
//! [`tls`] builds the rustls/quinn configurations: the coordinator's server (client certificates
//! optional, so a new agent can join), the joining agent (no certificate yet; trusts the
//! coordinator only through the CA pin in its token) and the member agent (mutual TLS).
//! [`identity`] makes keys, certificate requests and fingerprints; [`stream`] moves
//! `spillway_proto::wire` frames over QUIC streams; [`token`] is the one-time join token and
//! [`membership`] the join that spends it, and the identity an agent keeps from it. [`signing`]
//! signs what the CA vouches for besides certificates (agent binaries) and checks it.
//! [`bundle`] is the set of CAs a member trusts (more than one while the mesh CA is rotated),
//! and [`live`] a server whose certificate and trusted CAs change while it listens.

pub mod bundle;
pub mod identity;
pub mod live;
pub mod membership;
pub mod signing;
pub mod stream;
#[cfg(any(test, feature = "test-ca"))]
pub mod test_ca;
pub mod tls;
pub mod token;

pub use quinn;

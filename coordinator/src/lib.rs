//! The Spillway coordinator: [`server`] holds the mesh's state (nodes, certificates, tokens,
//! functions, jobs and their hand-over ledger in redb), its CA, the QUIC endpoint agents link
//! to, the live view of their load, placement of spilled jobs onto peers and replicas, the
//! HTTPS API and the MQTT broker's gateway; [`config`] reads `coordinator.toml`. The `spillway`
//! binary (crate `spillway-cli`) runs it with `spillway serve` or `spillway up`; [`backup`]
//! writes and restores its state, encrypted.

pub mod backup;
pub mod config;
pub mod server;

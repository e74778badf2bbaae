//! The Spillway coordinator and the `spillway` command-line interface.
//!
//! [`server`] is the coordinator (state, CA, QUIC endpoint for agents, HTTP API); [`config`]
//! reads its settings. [`api`] holds the HTTP bodies both sides share, [`client`] is the CLI's
//! side of that API, [`cli`] the commands built on it, and [`validate`] checks FDL files the way
//! the coordinator reads them. [`loadgen`] simulates thousands of agents for benchmarks.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod flash;
pub mod loadgen;
pub mod server;
pub mod validate;

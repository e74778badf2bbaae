//! The Spillway coordinator and the `spillway` command-line interface.
//!
//! Today it offers [`validate`]: checking FDL files the way the agent and coordinator will read
//! them. The coordinator server (state, CA, QUIC endpoint) builds on this crate.

pub mod validate;

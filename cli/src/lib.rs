//! The `spillway` command line: everything an operator does to a mesh from a terminal.
//!
//! [`client`] speaks the coordinator's HTTPS API (bodies from `spillway_api`) and [`commands`]
//! are built on it; [`validate`] checks FDL files the way the coordinator reads them; [`flash`]
//! writes an SD card image that joins the mesh at first boot; [`loadgen`] plays thousands of
//! agents for benchmarks. With the `serve` feature the binary also runs the coordinator
//! (`spillway serve`), and with `up` ([`up`]) a coordinator and a local agent in one process.
//! Without them nothing here needs Linux.

pub mod client;
pub mod commands;
pub mod contexts;
pub mod flash;
pub mod loadgen;
#[cfg(feature = "up")]
pub mod up;
pub mod validate;

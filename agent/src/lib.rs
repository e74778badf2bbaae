//! The Spillway edge agent.
//!
//! [`engine::Agent`] ties the parts together: [`watch`] turns files in bucket folders into
//! events, [`journal`] records every job durably, [`scheduler`] decides (sans-IO) what may run,
//! [`staging`] prepares each run and delivers its outputs, [`runtime`] executes functions
//! (`process`, `wasm`), [`joblog`] keeps per-job logs. [`catalog`] reads the FDL files and
//! deploys the functions meant for this node; [`config`] is the agent's TOML file. [`mesh`]
//! joins a coordinator's mesh and keeps the link to it (optional: an agent works alone too).

pub mod atomic;
pub mod capture;
pub mod catalog;
pub mod config;
pub mod engine;
pub mod image;
pub mod install;
pub mod joblog;
pub mod journal;
pub mod logging;
pub mod mesh;
pub mod runtime;
pub mod scheduler;
pub mod service;
pub mod signal;
pub mod staging;
pub mod watch;

pub use config::AgentConfig;
pub use engine::{Agent, AgentHandle, JobEvent};
pub use signal::shutdown_signal;

//! Spillway's shared vocabulary, owned in one place so every crate agrees on it.
//!
//! - [`fdl`] parses OSCAR/SCAR Functions Definition Language files (plus Spillway's own fields)
//!   into a typed model, with `FILE:LINE:COL: field.path: message` diagnostics.
//! - [`key`] validates object keys (file names relative to a bucket folder) so nothing is ever
//!   written outside a data root.
//! - [`job`] defines events and the deterministic job identity derived from them.
//! - [`wire`] is the agent ↔ coordinator protocol (versions, frames, messages), [`load`] the load
//!   reports and node health, [`uplink`] the agent's side of its link to the coordinator as a state machine. All sans-IO.

pub mod envelope;
pub mod fdl;
pub mod job;
pub mod key;
pub mod load;
pub mod quantity;
pub mod uplink;
pub mod wire;

pub use fdl::{Fdl, FunctionDef, Runtime};
pub use job::{Event, FileEvent, FileWrite, JobId, MqttEvent};
pub use key::ObjectKey;

//! The Spillway edge agent.
//!
//! [`engine::Agent`] ties the parts together: [`watch`] turns files in bucket folders into
//! events, [`mqtt`] turns messages into them, [`book`] makes every per-job decision (sans-IO)
//! and [`journal`] records them durably, [`scheduler`] is the book's admission, [`staging`] prepares each run and delivers its
//! outputs, [`runtime`] executes functions (`process`, `wasm`, and `oci` containers through the
//! shim program its caller names), [`joblog`] keeps per-job logs. [`catalog`] deploys the
//! functions meant for this node; `spillway_agent_config` reads its `agent.toml`. [`mesh`]
//! keeps the link to a coordinator (optional: an agent works alone too; joining itself is
//! `spillway_link::membership`). [`beneath`] resolves outside paths (image layers, object keys)
//! beneath their root without following symbolic links.

pub mod beneath;
pub mod book;
pub mod capture;
pub mod catalog;
pub mod disk;
pub mod engine;
pub mod image;
pub mod install;
pub mod joblog;
pub mod journal;
pub mod mesh;
pub mod metrics;
pub mod mqtt;
pub mod runner;
pub mod runtime;
pub mod scheduler;
pub mod staging;
pub mod upgrade;
pub mod watch;

pub use engine::{Agent, AgentHandle, DiskSyncs, JobEvent};
pub use spillway_agent_config::AgentConfig;

/// Hands freed heap back to the system. glibc keeps what a burst freed (compiling modules at
/// start, pulling and unpacking an image) in its arenas; on a 1 GB board that is worth a call.
pub fn release_unused_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

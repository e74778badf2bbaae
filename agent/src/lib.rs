//! The Spillway edge agent.
//!
//! [`engine::Agent`] ties the parts together: [`watch`] turns files in bucket folders into
//! events, [`journal`] records every job durably, [`scheduler`] decides (sans-IO) what may run,
//! [`staging`] prepares each run and delivers its outputs, [`runtime`] executes functions
//! (`process`, `wasm`), [`joblog`] keeps per-job logs. [`catalog`] reads the FDL files and
//! deploys the functions meant for this node; [`config`] is the agent's TOML file. [`mesh`]
//! joins a coordinator's mesh and keeps the link to it (optional: an agent works alone too).
//! [`beneath`] resolves outside paths (image layers, object keys) beneath their root without
//! following symbolic links.

pub mod atomic;
pub mod beneath;
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
pub mod mqtt;
pub mod runner;
pub mod runtime;
pub mod s3;
pub mod scheduler;
pub mod service;
pub mod signal;
pub mod staging;
pub mod watch;

pub use config::AgentConfig;
pub use engine::{Agent, AgentHandle, JobEvent};
pub use signal::shutdown_signal;

/// An error and its causes on one line (libraries such as reqwest hide the useful part in
/// `source()`); a cause already quoted by its parent is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let m = s.to_string();
        if !text.contains(&m) {
            text.push_str(": ");
            text.push_str(&m);
        }
        source = s.source();
    }
    text
}

/// Hands freed heap back to the system. glibc keeps what a burst freed (compiling modules at
/// start, pulling and unpacking an image) in its arenas; on a 1 GB board that is worth a call.
pub fn release_unused_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap pages to the kernel.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

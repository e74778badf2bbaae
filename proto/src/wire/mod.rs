//! The agent ↔ coordinator protocol: versions, framing and messages. IO-free: the QUIC shell in
//! `spillway-link` moves the bytes, this module decides what they mean.
//!
//! Streams carry length-prefixed postcard [`frame`]s: one long-lived control stream per
//! connection (hello, deployments, job updates) opened by the agent, and one short stream per
//! request the coordinator makes of an agent (logs, files). Load reports travel as QUIC
//! datagrams, latest wins.

pub mod frame;
pub mod msg;

pub use frame::{FrameDecoder, FrameError, encode};
pub use msg::*;

use serde::{Deserialize, Serialize};

/// TLS application protocol of every Spillway QUIC connection.
pub const ALPN: &[u8] = b"spillway/1";

/// The name every coordinator certificate carries, whatever its addresses: agents pin the
/// coordinator's CA, so the name only has to be the same everywhere (and survives NAT, DHCP and
/// network namespaces).
pub const COORDINATOR_SERVER_NAME: &str = "spillway-coordinator";

/// A protocol version. Peers with the same `major` understand each other; `minor` only adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

/// The protocol this build speaks.
pub const PROTOCOL: Version = Version { major: 1, minor: 6 };

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Version {
    /// Whether a peer speaking this version understands what was added in `major.minor`.
    pub fn has(self, major: u16, minor: u16) -> bool {
        self.major == major && self.minor >= minor
    }

    /// Whether a peer speaking `theirs` can talk to us; the refusal names both versions and who
    /// has to move.
    pub fn check_peer(self, theirs: Version, we_are: &str, they_are: &str) -> Result<(), String> {
        if self.major == theirs.major {
            return Ok(());
        }
        let older = if theirs.major < self.major {
            they_are
        } else {
            we_are
        };
        Err(format!(
            "protocol mismatch: the {we_are} speaks spillway protocol {self}, the {they_are} speaks {theirs}; upgrade the {older} so both have the same major version"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_major_version_is_compatible_whatever_the_minor() {
        let theirs = Version { major: 1, minor: 7 };
        assert!(PROTOCOL.check_peer(theirs, "coordinator", "agent").is_ok());
    }

    #[test]
    fn different_major_version_is_refused_naming_both_versions() {
        let theirs = Version { major: 2, minor: 0 };
        let err = PROTOCOL
            .check_peer(theirs, "coordinator", "agent")
            .unwrap_err();
        assert!(
            err.contains(&PROTOCOL.to_string()) && err.contains("2.0"),
            "{err}"
        );
        assert!(err.contains("upgrade the coordinator"), "{err}");
    }
}

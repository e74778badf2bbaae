//! The mesh CA and its rotation (`spillway admin ca status | rotate | retire`).

use serde::{Deserialize, Serialize};

/// `GET /v1/ca`, and the answer to a rotation or retirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaStatus {
    /// The CA that signs node and server certificates (and agent binaries).
    pub signing: CaSummary,
    /// During a rotation: the CA being replaced, still trusted until it is retired.
    pub retiring: Option<CaSummary>,
    /// During a rotation: every node, and how far it has moved to the new CA.
    pub nodes: Vec<NodeCa>,
    /// The trusted CAs in PEM, the signing one first: what a `client.toml`'s `ca` holds, and
    /// MQTT clients' `--cafile`.
    pub pem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaSummary {
    pub subject: String,
    /// Hex SHA-256 of the certificate.
    pub fingerprint: String,
}

/// Where one node stands in a rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCa {
    pub node: String,
    /// Its certificate is from the signing CA.
    pub certified_by_signing: bool,
    /// It said it trusts the signing CA (agents of protocol 1.6 and later).
    pub trusts_signing: bool,
    pub connected: bool,
}

impl NodeCa {
    /// Why the old CA cannot be retired yet because of this node; `None` once it has moved.
    pub fn holds_back(&self) -> Option<String> {
        let mut why = Vec::new();
        if !self.certified_by_signing {
            why.push("its certificate is from the old CA");
        }
        if !self.trusts_signing {
            why.push("it has not confirmed it trusts the new CA");
        }
        if why.is_empty() {
            return None;
        }
        let state = if self.connected {
            "connected; it renews within a minute, and an agent older than protocol 1.6 cannot learn a new CA: upgrade it"
        } else {
            "not connected since the rotation"
        };
        Some(format!("{} ({}; {state})", self.node, why.join(", ")))
    }
}

/// `POST /v1/admin/ca/retire`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetireRequest {
    /// Retire even though some nodes still depend on the old CA: they must join again.
    #[serde(default)]
    pub force: bool,
}

//! Who holds what: join tokens, scoped API tokens and MQTT users as the coordinator stores and
//! lists them. What each scope may do is the server's decision (its `scope` module).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a caller may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "scope")]
pub enum Scope {
    Admin,
    Operator,
    Invoker { functions: Vec<String> },
    Webhook,
}

impl Scope {
    /// `operator`, `invoker`, `webhook` (what `api-token create --scope` takes).
    pub fn parse(text: &str, functions: Vec<String>) -> Result<Self, String> {
        match text {
            "operator" if functions.is_empty() => Ok(Self::Operator),
            "webhook" if functions.is_empty() => Ok(Self::Webhook),
            "invoker" if !functions.is_empty() => Ok(Self::Invoker { functions }),
            "invoker" => Err("an invoker token names the functions it may invoke (--function F)".into()),
            "operator" | "webhook" => Err(format!("a {text} token names no functions")),
            "admin" => Err("there is one admin token, in the coordinator's state folder; make an operator token instead".into()),
            other => Err(format!("unknown scope `{other}`: operator, invoker or webhook")),
        }
    }

    /// The scope as a user reads it.
    pub fn describe(&self) -> String {
        match self {
            Self::Admin => "admin".into(),
            Self::Operator => "operator".into(),
            Self::Invoker { functions } => format!("invoker of {}", functions.join(", ")),
            Self::Webhook => "webhook".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub description: String,
    pub used_by: Option<String>,
    /// What the token grants the node that joins with it.
    #[serde(default, flatten)]
    pub grant: TokenGrant,
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
}

/// What a join token decides about the node that uses it: the operator's word, never the
/// agent's. A token without `node` admits only a name the mesh does not have yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrant {
    /// The one node name this token admits; the only way to join again under a taken name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node's labels (they decide which functions, and secrets, it receives). `None`: a new
    /// node gets none, a node joining again keeps its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

/// A token as listed: its id (the first hex digits of its hash) names it for `token revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenListing {
    pub id: String,
    #[serde(flatten)]
    pub record: TokenRecord,
}

/// A scoped API token (`spillway api-token create`), stored by the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    #[serde(flatten)]
    pub scope: Scope,
    pub description: String,
    pub created_at_ms: u64,
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
}

/// An API token as listed, with its id (the first hex digits of its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenListing {
    pub id: String,
    #[serde(flatten)]
    pub record: ApiTokenRecord,
}

/// A person's or device's login on the embedded MQTT broker and the topic filters it may
/// publish and subscribe to. The password is stored as its SHA-256 (it is random, 128 bits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttUserRecord {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub password_hash: String,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub description: String,
    pub created_at_ms: u64,
}

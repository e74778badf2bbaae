//! The coordinator's durable state in redb: nodes, their certificates, join tokens, functions
//! and the jobs agents report. Values are JSON (function definitions carry free-form fields).
//!
//! Membership, tokens and functions are committed durably before they are acted on. Hand-over
//! records are too, through a group-committing [`Journal`] whose follow-ups run once their
//! records are on disk. Job rows mirror the agents' own journals (the source of truth) and node
//! attributes are re-sent at every connection, so both are committed without an fsync of their
//! own and become durable with the next durable commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use spillway_api::tokens::{
    ApiTokenListing, ApiTokenRecord, MqttUserRecord, TokenListing, TokenRecord,
};
use spillway_proto::wire::{Artifact, Capacity, JobUpdate, Outcome};
use spillway_proto::{Event, FunctionDef, JobId};

mod group_commit;

use group_commit::{Journal, Then};

const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// Certificate fingerprint (hex) → node name.
const CERTS: TableDefinition<&str, &str> = TableDefinition::new("certs");
/// SHA-256 of a token's secret (hex) → token record.
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// SHA-256 of a scoped API token (hex) → its scope.
const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
/// MQTT users of the embedded broker, by name (`spillway mqtt user add`).
const MQTT_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("mqtt_users");
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// Job id (hex) → the coordinator's record of a job handed over to it.
pub(super) const HANDOVERS: TableDefinition<&str, &[u8]> = TableDefinition::new("handovers");
/// `service/name` of a job another cluster delegated here (its `X-Delegated-Job-ID`) → the
/// job's record, so it can ask about the job by the name it gave.
const DELEGATED: TableDefinition<&str, &[u8]> = TableDefinition::new("delegated");
/// Agent release version → its signed binaries (the bytes are blobs).
const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases");
/// Rollout id (zero-padded, so they list in order) → the rollout and every node's phase.
const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
/// Counters of the store itself: rows forgotten since the file was last compacted.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORGOTTEN: &str = "rows_forgotten_since_compaction";
/// Forgotten rows after which the next start compacts the file (redb reuses freed pages while
/// it runs; compaction gives them back to the file system).
pub const COMPACT_AFTER: u64 = 10_000;

/// A job another cluster delegated to this coordinator, under the name it gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelegatedJob {
    pub service: String,
    pub name: String,
    pub job: String,
    pub from: Option<String>,
    pub received_at_ms: u64,
}

#[derive(Debug, Clone, thiserror::Error, displaydoc::Display)]
pub enum StoreError {
    /// cannot open the coordinator state {path}: {message}
    Open { path: PathBuf, message: String },
    /// coordinator state: {0}
    Db(String),
    /// coordinator state has an unreadable record in `{table}` ({message}); the coordinator will not start on it, since a table read as empty would take every node's functions away: restore the state folder from a backup, or move the database aside to start an empty mesh (every agent then joins again)
    Corrupt {
        table: &'static str,
        message: String,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
    })*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// A member of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub fingerprint: String,
    pub joined_at_ms: u64,
    pub cert_expires_at_ms: u64,
    pub cluster_id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    pub agent_version: String,
    pub arch: String,
    pub last_seen_ms: u64,
    pub last_address: String,
    /// Functions the agent runs and refuses, from its last deployment ack.
    pub running: Vec<String>,
    pub refused: Vec<(String, String)>,
    /// What the agent's own config proposes; shown, never acted on (`spillway label node`
    /// adopts them).
    #[serde(default)]
    pub proposed_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub proposed_cluster_id: Option<String>,
    /// The certificate (fingerprint, hex) the node connected with when it was last renewed,
    /// still a member until the node connects with the new one: an agent that lost the renewal
    /// (a crash before it stored the new certificate) is never locked out.
    #[serde(default)]
    pub previous_fingerprint: Option<String>,
    /// How many times its certificate was renewed over the mesh.
    #[serde(default)]
    pub renewals: u32,
    /// The fingerprint (hex) of the CA that issued its certificate; `None` for certificates
    /// issued before CAs were told apart (a rotation labels them as the old CA's).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The fingerprints (hex) of the CAs the agent said it trusts, last time it was sent them
    /// (agents of protocol 1.6 and later).
    #[serde(default)]
    pub trusted_cas: Vec<String>,
    /// Taken out of placement by the operator (`spillway cordon`): no new job is placed on it;
    /// what it has, and what appears in its own folders, still runs there.
    #[serde(default)]
    pub cordoned: bool,
}

impl NodeRecord {
    /// A node that just joined with the certificate whose fingerprint (hex) is given; the rest
    /// arrives with its first Hello.
    pub fn joined(name: &str, fingerprint: String, now_ms: u64, cert_expires_at_ms: u64) -> Self {
        Self {
            name: name.to_owned(),
            fingerprint,
            joined_at_ms: now_ms,
            cert_expires_at_ms,
            cluster_id: None,
            labels: BTreeMap::new(),
            capacity: Capacity::default(),
            agent_version: String::new(),
            arch: String::new(),
            last_seen_ms: now_ms,
            last_address: String::new(),
            running: vec![],
            refused: vec![],
            proposed_labels: BTreeMap::new(),
            proposed_cluster_id: None,
            previous_fingerprint: None,
            renewals: 0,
            issuer: None,
            trusted_cas: Vec::new(),
            cordoned: false,
        }
    }
}

/// The persisted form of one handed-over job: the ledger's record and what a peer needs to run it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandoverRow {
    pub id: JobId,
    pub origin: String,
    pub function: String,
    pub hops: u8,
    pub visited: Vec<String>,
    pub attempt: u32,
    pub state: RowState,
    pub event: Event,
    pub input: [u8; 32],
    pub accepted_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RowState {
    Placed { peer: String },
    Finished(Outcome),
    Returning(String),
}

/// How many hex digits of a token's hash name it.
pub const TOKEN_ID_LEN: usize = 12;

/// A function as applied: its definition (script/module paths relative, as written) and files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub def: FunctionDef,
    pub files: Vec<Artifact>,
    pub source: String,
    pub applied_at_ms: u64,
}

impl FunctionRecord {
    /// The text of the function's script, as applied.
    pub fn script_text(&self) -> Option<String> {
        self.files
            .iter()
            .find(|f| f.path.starts_with("script/"))
            .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
    }
}

/// A job as last reported by the node that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// The job's origin.
    pub node: String,
    pub update: JobUpdate,
    pub updated_at_ms: u64,
    /// The peer that ran it, when it was handed over.
    #[serde(default)]
    pub ran_on: Option<String>,
}

#[derive(Debug)]
pub struct Store {
    db: Arc<Database>,
    /// Hand-over records, group-committed (see [`Journal`]).
    journal: Journal,
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// What a token lookup concluded for a node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Unknown,
    Expired,
    Revoked,
    Used(String),
    /// The name is a member already and the token was not made for it.
    NameTaken,
    /// The token was made for another node.
    OtherNode(String),
    Valid,
}

/// The rules of [`Store::join`], on one token and whatever node has the name already.
fn check_token(
    token: &TokenRecord,
    existing: Option<&NodeRecord>,
    name: &str,
    now_ms: u64,
) -> TokenCheck {
    if let Some(by) = &token.used_by {
        return TokenCheck::Used(by.clone());
    }
    if token.revoked_at_ms.is_some() {
        return TokenCheck::Revoked;
    }
    if token.expires_at_ms <= now_ms {
        return TokenCheck::Expired;
    }
    match &token.grant.node {
        Some(bound) if bound != name => TokenCheck::OtherNode(bound.clone()),
        Some(_) => TokenCheck::Valid,
        None if existing.is_some() => TokenCheck::NameTaken,
        None => TokenCheck::Valid,
    }
}

impl Store {
    /// Opens (or creates) the state at `path` and reads every record the coordinator acts on
    /// at start: a damaged database or record refuses the start, and the file is left as it
    /// was for a restore.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            message: match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "another coordinator is using it (one `spillway serve` per state folder)".into()
                }
                other => format!(
                    "{other}; the file is damaged or not a Spillway state: restore the state folder from a backup, or move the file aside to start an empty mesh (every agent then joins again)"
                ),
            },
        })?;
        let tx = db.begin_write()?;
        for t in [
            NODES, TOKENS, API_TOKENS, FUNCTIONS, JOBS, HANDOVERS, DELEGATED, MQTT_USERS, RELEASES,
            ROLLOUTS,
        ] {
            tx.open_table(t)?;
        }
        tx.open_table(CERTS)?;
        let forgotten = tx
            .open_table(META)?
            .get(FORGOTTEN)?
            .map_or(0, |v| v.value());
        tx.commit()?;
        if forgotten >= COMPACT_AFTER {
            compact(&mut db, path, forgotten)?;
        }
        let db = Arc::new(db);
        let store = Self {
            journal: Journal::start(db.clone()),
            db,
        };
        store.nodes()?;
        store.functions()?;
        store.tokens()?;
        store.mqtt_users()?;
        store.api_token_listing()?;
        store.releases()?;
        store.rollouts()?;
        Ok(store)
    }

    /// Copies every table, as one read transaction sees them (a consistent cut, taken while
    /// the coordinator runs), into a new database at `dest`, made durable there.
    pub fn snapshot(&self, dest: &Path) -> Result<(), StoreError> {
        let read = self.db.begin_read()?;
        let out = Database::create(dest).map_err(|e| StoreError::Open {
            path: dest.to_owned(),
            message: e.to_string(),
        })?;
        let write = out.begin_write()?;
        for def in [
            NODES, TOKENS, API_TOKENS, FUNCTIONS, JOBS, HANDOVERS, DELEGATED, MQTT_USERS, RELEASES,
            ROLLOUTS,
        ] {
            let (from, mut to) = (read.open_table(def)?, write.open_table(def)?);
            for entry in from.iter()? {
                let (k, v) = entry?;
                to.insert(k.value(), v.value())?;
            }
        }
        {
            let (from, mut to) = (read.open_table(CERTS)?, write.open_table(CERTS)?);
            for entry in from.iter()? {
                let (k, v) = entry?;
                to.insert(k.value(), v.value())?;
            }
        }
        write.commit()?;
        Ok(())
    }

    pub fn put_token(&self, hash: &str, record: &TokenRecord) -> Result<(), StoreError> {
        self.put_tokens(&[(hash.to_owned(), record.clone())])
    }

    /// Stores several tokens in one durable commit.
    pub fn put_tokens(&self, tokens: &[(String, TokenRecord)]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(TOKENS)?;
            for (hash, record) in tokens {
                t.insert(hash.as_str(), encode(record).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.list(TOKENS, "tokens")
    }

    /// Whether the token would admit a node named `name` now (nothing is changed): the CSR is
    /// only signed after this says so, and [`Store::join`] checks again as it commits.
    pub fn check_join(
        &self,
        token_hash: &str,
        name: &str,
        now_ms: u64,
    ) -> Result<TokenCheck, StoreError> {
        let Some(token) = self.get::<TokenRecord>(TOKENS, "tokens", token_hash)? else {
            return Ok(TokenCheck::Unknown);
        };
        let existing = self.node(name)?;
        Ok(check_token(&token, existing.as_ref(), name, now_ms))
    }

    /// Admits `node` with the certificate `fingerprint` if the token admits its name, consuming
    /// the token and recording the node in the same transaction: a token can never admit two
    /// nodes, and a name that is taken can only be joined again with a token made for it. The
    /// node's labels and cluster id come from the token (or stay as they were), never from the
    /// agent.
    pub fn join(
        &self,
        token_hash: &str,
        now_ms: u64,
        mut node: NodeRecord,
    ) -> Result<TokenCheck, StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut tokens = tx.open_table(TOKENS)?;
            let Some(raw) = tokens.get(token_hash)?.map(|v| v.value().to_vec()) else {
                return Ok(TokenCheck::Unknown);
            };
            let mut token: TokenRecord = decode("tokens", &raw)?;
            let mut nodes = tx.open_table(NODES)?;
            let existing: Option<NodeRecord> = nodes
                .get(node.name.as_str())?
                .map(|v| decode("nodes", v.value()))
                .transpose()?;
            let check = check_token(&token, existing.as_ref(), &node.name, now_ms);
            if check != TokenCheck::Valid {
                return Ok(check);
            }
            token.used_by = Some(node.name.clone());
            tokens.insert(token_hash, encode(&token).as_slice())?;
            let mut certs = tx.open_table(CERTS)?;
            // A node joining again (new SD card, lost key) replaces its old certificate.
            if let Some(old) = &existing {
                certs.remove(old.fingerprint.as_str())?;
                if let Some(previous) = &old.previous_fingerprint {
                    certs.remove(previous.as_str())?;
                }
                node.labels = old.labels.clone();
                node.cluster_id = old.cluster_id.clone();
            }
            if let Some(labels) = token.grant.labels {
                node.labels = labels;
            }
            if token.grant.cluster_id.is_some() {
                node.cluster_id = token.grant.cluster_id;
            }
            certs.insert(node.fingerprint.as_str(), node.name.as_str())?;
            nodes.insert(node.name.as_str(), encode(&node).as_slice())?;
        }
        tx.commit()?;
        Ok(TokenCheck::Valid)
    }

    /// Revokes the unused tokens whose id (hash) starts with `id`; returns how many.
    pub fn revoke_tokens(&self, id: &str, now_ms: u64) -> Result<usize, StoreError> {
        self.revoke(TOKENS, "tokens", id, |t: &mut TokenRecord| {
            let unused = t.used_by.is_none() && t.revoked_at_ms.is_none();
            if unused {
                t.revoked_at_ms = Some(now_ms);
            }
            unused
        })
    }

    /// Stores a scoped API token, durably (it is shown once and must work at once).
    pub fn put_api_token(&self, hash: &str, record: &ApiTokenRecord) -> Result<(), StoreError> {
        self.put(API_TOKENS, hash, record, Durability::Immediate)
    }

    /// The scoped API token with this hash, unless it was revoked.
    pub fn api_token(&self, hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
        Ok(self
            .get::<ApiTokenRecord>(API_TOKENS, "api_tokens", hash)?
            .filter(|t| t.revoked_at_ms.is_none()))
    }

    /// Adds or replaces an MQTT user, durably.
    pub fn put_mqtt_user(&self, user: &MqttUserRecord) -> Result<(), StoreError> {
        self.put(MQTT_USERS, &user.name, user, Durability::Immediate)
    }

    pub fn mqtt_user(&self, name: &str) -> Result<Option<MqttUserRecord>, StoreError> {
        self.get(MQTT_USERS, "mqtt_users", name)
    }

    /// Every MQTT user, without password hashes.
    pub fn mqtt_users(&self) -> Result<Vec<MqttUserRecord>, StoreError> {
        let mut users: Vec<MqttUserRecord> = self.list(MQTT_USERS, "mqtt_users")?;
        for u in &mut users {
            u.password_hash.clear();
        }
        Ok(users)
    }

    /// Removes an MQTT user; whether it existed.
    pub fn remove_mqtt_user(&self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = tx.open_table(MQTT_USERS)?.remove(name)?.is_some();
        tx.commit()?;
        Ok(existed)
    }

    /// Revokes the API tokens whose id (hash) starts with `id`; returns how many.
    pub fn revoke_api_tokens(&self, id: &str, now_ms: u64) -> Result<usize, StoreError> {
        self.revoke(API_TOKENS, "api_tokens", id, |t: &mut ApiTokenRecord| {
            let live = t.revoked_at_ms.is_none();
            if live {
                t.revoked_at_ms = Some(now_ms);
            }
            live
        })
    }

    /// Applies `revoke` to every record whose key starts with `id`, in one durable commit;
    /// returns how many it changed.
    fn revoke<T: Serialize + DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        name: &'static str,
        id: &str,
        revoke: impl Fn(&mut T) -> bool,
    ) -> Result<usize, StoreError> {
        let tx = self.db.begin_write()?;
        let mut changed = Vec::new();
        {
            let mut t = tx.open_table(def)?;
            for entry in t.range(id..)? {
                let (k, v) = entry?;
                if !k.value().starts_with(id) {
                    break;
                }
                let mut record: T = decode(name, v.value())?;
                if revoke(&mut record) {
                    changed.push((k.value().to_owned(), record));
                }
            }
            for (k, record) in &changed {
                t.insert(k.as_str(), encode(record).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(changed.len())
    }

    /// Join tokens with their ids, for `spillway token list`.
    pub fn token_listing(&self) -> Result<Vec<TokenListing>, StoreError> {
        Ok(self
            .with_ids(TOKENS, "tokens")?
            .into_iter()
            .map(|(id, record)| TokenListing { id, record })
            .collect())
    }

    /// API tokens with their ids, for `spillway api-token list`.
    pub fn api_token_listing(&self) -> Result<Vec<ApiTokenListing>, StoreError> {
        Ok(self
            .with_ids(API_TOKENS, "api_tokens")?
            .into_iter()
            .map(|(id, record)| ApiTokenListing { id, record })
            .collect())
    }

    /// Every record of a table keyed by hash, with the id that names it (its first digits).
    fn with_ids<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        name: &'static str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(def)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push((
                k.value().chars().take(TOKEN_ID_LEN).collect(),
                decode(name, v.value())?,
            ));
        }
        Ok(out)
    }

    /// Sets a node's labels and cluster id (the operator's word), durably.
    pub fn set_node_labels(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        cluster_id: Option<Option<String>>,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let Some(mut node) = self.node(name)? else {
            return Ok(None);
        };
        node.labels = labels;
        if let Some(c) = cluster_id {
            node.cluster_id = c;
        }
        self.put(NODES, name, &node, Durability::Immediate)?;
        Ok(Some(node))
    }

    /// Cordons or uncordons `name`; `None` if there is no such node.
    pub fn set_node_cordoned(
        &self,
        name: &str,
        cordoned: bool,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let Some(mut node) = self.node(name)? else {
            return Ok(None);
        };
        node.cordoned = cordoned;
        self.put(NODES, name, &node, Durability::Immediate)?;
        Ok(Some(node))
    }

    /// The node holding the certificate with this fingerprint.
    pub fn node_by_cert(&self, fingerprint: &str) -> Result<Option<NodeRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        let Some(name) = tx
            .open_table(CERTS)?
            .get(fingerprint)?
            .map(|v| v.value().to_owned())
        else {
            return Ok(None);
        };
        self.node(&name)
    }

    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.get(NODES, "nodes", name)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.list(NODES, "nodes")
    }

    /// Refreshes a node's attributes (address, labels, load-bearing facts from its Hello and
    /// deployment acks). Not fsynced: they are re-sent at every connection, and membership itself
    /// (the certificate) is only changed by [`Store::join`] and [`Store::remove_node`], which are.
    /// Thousands of agents reconnecting at once must not queue behind thousands of fsyncs.
    pub fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.put(NODES, &node.name, node, Durability::None)
    }

    /// Records what a node runs after a deployment, durably: an agent whose deployment is
    /// unchanged does not ack again after a coordinator restart, so this must survive one.
    pub fn put_node_deployment(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.put(NODES, &node.name, node, Durability::Immediate)
    }

    /// Records a renewed certificate for `name`, durably and before the agent is given it: the
    /// certificate it is connected with (`current`, hex) stays a member as the previous one;
    /// any other (a renewal it never adopted) stops being one. `None` if the node is gone.
    pub fn renew_cert(
        &self,
        name: &str,
        current: &str,
        renewed: &str,
        expires_at_ms: u64,
        issuer: &str,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let tx = self.db.begin_write()?;
        let node = {
            let mut nodes = tx.open_table(NODES)?;
            let Some(raw) = nodes.get(name)?.map(|v| v.value().to_vec()) else {
                return Ok(None);
            };
            let mut node: NodeRecord = decode("nodes", &raw)?;
            let mut certs = tx.open_table(CERTS)?;
            for fp in [Some(&node.fingerprint), node.previous_fingerprint.as_ref()]
                .into_iter()
                .flatten()
            {
                if fp != current {
                    certs.remove(fp.as_str())?;
                }
            }
            certs.insert(renewed, name)?;
            node.previous_fingerprint = Some(current.to_owned());
            node.fingerprint = renewed.to_owned();
            node.cert_expires_at_ms = expires_at_ms;
            node.issuer = Some(issuer.to_owned());
            node.renewals = node.renewals.saturating_add(1);
            nodes.insert(name, encode(&node).as_slice())?;
            node
        };
        tx.commit()?;
        Ok(Some(node))
    }

    /// Records, durably, the CAs (fingerprints, hex) node `name` trusts; whether that changed
    /// anything.
    pub fn record_trust(&self, name: &str, cas: &[String]) -> Result<bool, StoreError> {
        // Read first: every link says it again, and thousands of agents reconnecting at once
        // must not queue for the write lock to change nothing.
        if self.node(name)?.is_none_or(|n| n.trusted_cas == cas) {
            return Ok(false);
        }
        self.change_node(name, |node| {
            let changed = node.trusted_cas != cas;
            node.trusted_cas = cas.to_vec();
            changed
        })
    }

    /// Labels the certificates issued before CAs were told apart as `issuer`'s (the CA being
    /// rotated away from), durably, before the rotation is acted on.
    pub fn label_issuers(&self, issuer: &str) -> Result<usize, StoreError> {
        let tx = self.db.begin_write()?;
        let mut labelled = 0;
        {
            let mut nodes = tx.open_table(NODES)?;
            let unlabelled: Vec<NodeRecord> = nodes
                .iter()?
                .map(|row| {
                    let (_, v) = row?;
                    decode::<NodeRecord>("nodes", v.value())
                })
                .filter(|n| !matches!(n, Ok(n) if n.issuer.is_some()))
                .collect::<Result<_, _>>()?;
            for mut node in unlabelled {
                node.issuer = Some(issuer.to_owned());
                nodes.insert(node.name.as_str(), encode(&node).as_slice())?;
                labelled += 1;
            }
        }
        tx.commit()?;
        Ok(labelled)
    }

    /// Changes node `name` in one durable transaction if `change` says it changed it.
    fn change_node(
        &self,
        name: &str,
        change: impl FnOnce(&mut NodeRecord) -> bool,
    ) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let changed = {
            let mut nodes = tx.open_table(NODES)?;
            let Some(raw) = nodes.get(name)?.map(|v| v.value().to_vec()) else {
                return Ok(false);
            };
            let mut node: NodeRecord = decode("nodes", &raw)?;
            let changed = change(&mut node);
            if changed {
                nodes.insert(name, encode(&node).as_slice())?;
            }
            changed
        };
        if changed {
            tx.commit()?;
        }
        Ok(changed)
    }

    /// The node connected with its renewed certificate: the previous one is retired.
    pub fn adopt_cert(&self, name: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut nodes = tx.open_table(NODES)?;
            let Some(raw) = nodes.get(name)?.map(|v| v.value().to_vec()) else {
                return Ok(());
            };
            let mut node: NodeRecord = decode("nodes", &raw)?;
            if let Some(old) = node.previous_fingerprint.take() {
                tx.open_table(CERTS)?.remove(old.as_str())?;
                nodes.insert(name, encode(&node).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes a node and revokes its certificate: it can no longer connect.
    pub fn remove_node(&self, name: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write()?;
        let existed = {
            let mut nodes = tx.open_table(NODES)?;
            let old = nodes.remove(name)?.map(|v| v.value().to_vec());
            if let Some(old) = &old {
                let old: NodeRecord = decode("nodes", old)?;
                let mut certs = tx.open_table(CERTS)?;
                certs.remove(old.fingerprint.as_str())?;
                if let Some(previous) = &old.previous_fingerprint {
                    certs.remove(previous.as_str())?;
                }
            }
            old.is_some()
        };
        tx.commit()?;
        Ok(existed)
    }

    pub fn functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.list(FUNCTIONS, "functions")
    }

    pub fn function(&self, name: &str) -> Result<Option<FunctionRecord>, StoreError> {
        self.get(FUNCTIONS, "functions", name)
    }

    /// Puts and removes functions in one transaction: an apply is all or nothing.
    pub fn change_functions(
        &self,
        put: &[FunctionRecord],
        remove: &[String],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(FUNCTIONS)?;
            for f in put {
                t.insert(f.def.name.as_str(), encode(f).as_slice())?;
            }
            for name in remove {
                t.remove(name.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn put_jobs(&self, rows: &[JobRow]) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None)?;
        {
            let mut t = tx.open_table(JOBS)?;
            for row in rows {
                t.insert(row.update.id.to_string().as_str(), encode(row).as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Queues hand-over records (`None` forgets the job) to be written durably with whatever
    /// else is queued; `then` runs once they are on disk, after every entry queued before it.
    pub fn queue_handovers(&self, records: Vec<(String, Option<HandoverRow>)>, then: Then) {
        let records = records
            .into_iter()
            .map(|(id, row)| (id, row.as_ref().map(encode)))
            .collect();
        self.journal.queue(records, then);
    }

    /// How many durable commits the hand-over journal made, and how many records they held.
    pub fn journal_stats(&self) -> (u64, u64) {
        self.journal.stats()
    }

    pub fn handovers(&self) -> Result<Vec<HandoverRow>, StoreError> {
        self.list(HANDOVERS, "handovers")
    }

    /// Records a delegated job under its given name, durably (it was promised with a 201).
    pub fn put_delegated(&self, d: &DelegatedJob) -> Result<(), StoreError> {
        let key = format!("{}/{}", d.service, d.name);
        self.put(DELEGATED, &key, d, Durability::Immediate)
    }

    /// Delegated jobs of `service`.
    pub fn delegated(&self, service: &str) -> Result<Vec<DelegatedJob>, StoreError> {
        let all: Vec<DelegatedJob> = self.list(DELEGATED, "delegated")?;
        Ok(all.into_iter().filter(|d| d.service == service).collect())
    }

    /// Forgets jobs (by id) and the names delegating clusters gave them, in one commit.
    pub fn forget_jobs(
        &self,
        ids: &[String],
        delegated: &[DelegatedJob],
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut jobs = tx.open_table(JOBS)?;
            for id in ids {
                jobs.remove(id.as_str())?;
            }
            let mut names = tx.open_table(DELEGATED)?;
            for d in delegated {
                names.remove(format!("{}/{}", d.service, d.name).as_str())?;
            }
            let mut meta = tx.open_table(META)?;
            let before = meta.get(FORGOTTEN)?.map_or(0, |v| v.value());
            meta.insert(FORGOTTEN, before.saturating_add(ids.len() as u64))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the rows of finished jobs last updated before `now_ms - max_age_ms`, and the
    /// oldest finished beyond `max_rows`, with the names OSCAR clients gave them; one durable
    /// commit. Unfinished jobs always stay. Returns how many went.
    pub fn prune_jobs(
        &self,
        now_ms: u64,
        max_age_ms: u64,
        max_rows: usize,
    ) -> Result<usize, StoreError> {
        let mut finished: Vec<(u64, String)> = Vec::new();
        {
            let tx = self.db.begin_read()?;
            let t = tx.open_table(JOBS)?;
            for entry in t.iter()? {
                let (k, v) = entry?;
                // An unreadable row is left for `get jobs` to report.
                let Ok(row) = decode::<JobRow>("jobs", v.value()) else {
                    continue;
                };
                if row.update.phase.is_final() {
                    finished.push((row.updated_at_ms, k.value().to_owned()));
                }
            }
        }
        finished.sort();
        let cutoff = now_ms.saturating_sub(max_age_ms);
        let over = finished.len().saturating_sub(max_rows);
        let doomed: std::collections::HashSet<String> = finished
            .into_iter()
            .enumerate()
            .filter(|(i, (at, _))| *i < over || *at < cutoff)
            .map(|(_, (_, id))| id)
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let names: Vec<DelegatedJob> = self
            .list::<DelegatedJob>(DELEGATED, "delegated")?
            .into_iter()
            .filter(|d| doomed.contains(&d.job))
            .collect();
        let ids: Vec<String> = doomed.into_iter().collect();
        self.forget_jobs(&ids, &names)?;
        Ok(ids.len())
    }

    pub fn job_row(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.get(JOBS, "jobs", id)
    }

    pub fn jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        self.list(JOBS, "jobs")
    }

    /// The job whose id starts with `prefix`; an error names the ambiguity.
    pub fn job(&self, prefix: &str) -> Result<Result<JobRow, String>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(JOBS)?;
        let mut found = Vec::new();
        for entry in t.range(prefix..)? {
            let (k, v) = entry?;
            if !k.value().starts_with(prefix) || found.len() > 1 {
                break;
            }
            found.push(decode::<JobRow>("jobs", v.value())?);
        }
        Ok(match found.len() {
            0 => Err(format!(
                "no job with id {prefix}; list them with `spillway get jobs`"
            )),
            1 => Ok(found.remove(0)),
            _ => Err(format!("{prefix} matches several jobs; give more digits")),
        })
    }

    /// Adds or replaces a release, durably (orders are signed from it).
    pub fn put_release(&self, release: &spillway_api::upgrades::Release) -> Result<(), StoreError> {
        self.put(RELEASES, &release.version, release, Durability::Immediate)
    }

    /// Forgets releases, durably.
    pub fn remove_releases(&self, versions: &[String]) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(RELEASES)?;
            for v in versions {
                t.remove(v.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn releases(&self) -> Result<Vec<spillway_api::upgrades::Release>, StoreError> {
        self.list(RELEASES, "releases")
    }

    /// Records a rollout's state, durably: nothing is ordered before it is on disk.
    pub fn put_rollout(&self, rollout: &spillway_api::upgrades::Rollout) -> Result<(), StoreError> {
        self.put(
            ROLLOUTS,
            &rollout_key(rollout.id),
            rollout,
            Durability::Immediate,
        )
    }

    /// Every rollout, oldest first.
    pub fn rollouts(&self) -> Result<Vec<spillway_api::upgrades::Rollout>, StoreError> {
        self.list(ROLLOUTS, "rollouts")
    }

    /// Job rows forgotten since the file was last compacted (at start, past [`COMPACT_AFTER`]).
    pub fn rows_forgotten_since_compaction(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx
            .open_table(META)?
            .get(FORGOTTEN)?
            .map_or(0, |v| v.value()))
    }

    /// Forgets finished rollouts but the newest `keep`; how many went.
    pub fn prune_rollouts(&self, keep: usize) -> Result<usize, StoreError> {
        let all = self.rollouts()?;
        let done: Vec<u64> = all
            .iter()
            .filter(|r| !r.is_running())
            .map(|r| r.id)
            .collect();
        let gone = &done[..done.len().saturating_sub(keep)];
        if gone.is_empty() {
            return Ok(0);
        }
        let tx = self.db.begin_write()?;
        {
            let mut t = tx.open_table(ROLLOUTS)?;
            for id in gone {
                t.remove(rollout_key(*id).as_str())?;
            }
        }
        tx.commit()?;
        Ok(gone.len())
    }

    fn get<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        name: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let tx = self.db.begin_read()?;
        let value = tx.open_table(def)?.get(key)?;
        value.map(|v| decode(name, v.value())).transpose()
    }

    fn put<T: Serialize>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(durability)?;
        tx.open_table(def)?.insert(key, encode(value).as_slice())?;
        tx.commit()?;
        Ok(())
    }

    fn list<T: DeserializeOwned>(
        &self,
        def: TableDefinition<&str, &[u8]>,
        name: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(def)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            out.push(decode(name, v.value())?);
        }
        Ok(out)
    }
}

/// Gives the pages of `forgotten` rows back to the file system, then zeroes the count.
fn compact(db: &mut Database, path: &Path, forgotten: u64) -> Result<(), StoreError> {
    let size = || std::fs::metadata(path).map_or(0, |m| m.len());
    let (before, started) = (size(), std::time::Instant::now());
    db.compact()
        .map_err(|e| StoreError::Db(format!("cannot compact the store: {e}")))?;
    let tx = db.begin_write()?;
    tx.open_table(META)?.insert(FORGOTTEN, 0)?;
    tx.commit()?;
    tracing::info!(
        forgotten,
        before_mib = before >> 20,
        after_mib = size() >> 20,
        took_ms = started.elapsed().as_millis() as u64,
        "compacted the coordinator's store"
    );
    Ok(())
}

fn rollout_key(id: u64) -> String {
    format!("{id:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, fp: &str) -> NodeRecord {
        NodeRecord::joined(name, fp.into(), 0, 0)
    }

    fn token(expires_at_ms: u64) -> TokenRecord {
        TokenRecord {
            created_at_ms: 0,
            expires_at_ms,
            description: String::new(),
            used_by: None,
            grant: spillway_api::tokens::TokenGrant::default(),
            revoked_at_ms: None,
        }
    }

    fn token_for(node: &str) -> TokenRecord {
        let mut t = token(100);
        t.grant.node = Some(node.into());
        t
    }

    fn row(n: u8, phase: spillway_proto::wire::JobPhase, at_ms: u64) -> JobRow {
        JobRow {
            node: "pi-1".into(),
            update: spillway_proto::wire::JobUpdate {
                id: spillway_proto::JobId::from_bytes([n; 16]),
                function: "f".into(),
                phase,
                input: None,
                outputs: vec![],
                reason: None,
                attempt: 1,
                queued_at_ms: at_ms,
                started_at_ms: None,
                finished_at_ms: None,
                origin: None,
            },
            updated_at_ms: at_ms,
            ran_on: None,
        }
    }

    #[test]
    fn after_many_forgotten_rows_the_next_start_compacts_the_file() {
        use spillway_proto::wire::JobPhase::Succeeded;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        let rows: Vec<JobRow> = (0..COMPACT_AFTER as u32 + 2_000)
            .map(|n| {
                let mut r = row(0, Succeeded, 1_000);
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&n.to_be_bytes());
                r.update.id = spillway_proto::JobId::from_bytes(id);
                r.update.reason = Some("x".repeat(400));
                r
            })
            .collect();
        for chunk in rows.chunks(2_000) {
            store.put_jobs(chunk).unwrap();
        }
        // A durable commit, so the file holds them all.
        store
            .put_release(&spillway_api::upgrades::Release {
                version: "1".into(),
                binaries: vec![],
            })
            .unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        assert_eq!(store.prune_jobs(10_000, 1, usize::MAX).unwrap(), rows.len());
        drop(store);
        // redb gives back only what is free at the end of the file.
        let pruned = std::fs::metadata(&path).unwrap().len();
        let store = Store::open(&path).unwrap();
        let compacted = std::fs::metadata(&path).unwrap().len();
        assert!(
            compacted * 4 < full && compacted * 2 < pruned,
            "{full} -> pruned {pruned} -> compacted {compacted} bytes"
        );
        assert!(store.jobs().unwrap().is_empty());
        assert_eq!(
            store.releases().unwrap().len(),
            1,
            "what was kept is still there"
        );
        // Counted from zero again: the next start does not compact.
        assert_eq!(store.rows_forgotten_since_compaction().unwrap(), 0);
    }

    #[test]
    fn retention_forgets_old_finished_jobs_and_their_oscar_names_but_never_unfinished_ones() {
        use spillway_proto::wire::JobPhase::{Running, Succeeded};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut rows: Vec<JobRow> = (0..10)
            .map(|n| row(n, Succeeded, u64::from(n) * 1_000))
            .collect();
        rows.push(row(99, Running, 0));
        store.put_jobs(&rows).unwrap();
        let old = rows[0].update.id.to_string();
        store
            .put_delegated(&DelegatedJob {
                service: "svc".into(),
                name: "first".into(),
                job: old.clone(),
                from: None,
                received_at_ms: 0,
            })
            .unwrap();
        // Older than 5 s at t = 8 s: those updated at 0..2 s.
        assert_eq!(store.prune_jobs(8_000, 5_000, usize::MAX).unwrap(), 3);
        assert!(store.job_row(&old).unwrap().is_none());
        assert!(
            store.delegated("svc").unwrap().is_empty(),
            "its name goes too"
        );
        // Then at most 4 finished.
        assert_eq!(store.prune_jobs(8_000, u64::MAX, 4).unwrap(), 3);
        assert_eq!(store.prune_jobs(8_000, u64::MAX, 4).unwrap(), 0);
        let left = store.jobs().unwrap();
        assert_eq!(left.len(), 5);
        assert!(
            left.iter().any(|r| r.update.phase == Running),
            "never an unfinished one"
        );
        assert!(
            left.iter()
                .all(|r| r.update.phase == Running || r.updated_at_ms >= 6_000)
        );
    }

    #[test]
    fn a_token_admits_one_node_once_and_only_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put_token("h1", &token(100)).unwrap();
        assert_eq!(
            store.join("nope", 10, node("a", "f1")).unwrap(),
            TokenCheck::Unknown
        );
        assert_eq!(
            store.join("h1", 10, node("a", "f1")).unwrap(),
            TokenCheck::Valid
        );
        assert_eq!(
            store.join("h1", 10, node("b", "f2")).unwrap(),
            TokenCheck::Used("a".into())
        );
        store.put_token("h2", &token(100)).unwrap();
        assert_eq!(
            store.join("h2", 100, node("c", "f3")).unwrap(),
            TokenCheck::Expired
        );
        assert_eq!(store.node_by_cert("f1").unwrap().unwrap().name, "a");
        assert!(store.node_by_cert("f2").unwrap().is_none());
    }

    #[test]
    fn a_renewed_certificate_joins_the_old_one_until_adopted_and_a_lost_renewal_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put_token("h1", &token(100)).unwrap();
        store.join("h1", 1, node("a", "f1")).unwrap();
        let member = |fp: &str| store.node_by_cert(fp).unwrap().map(|n| n.name);
        // Renewed while connected with f1: both are members until the node uses f2.
        let n = store
            .renew_cert("a", "f1", "f2", 5_000, "ca")
            .unwrap()
            .unwrap();
        assert_eq!(
            (n.fingerprint.as_str(), n.cert_expires_at_ms, n.renewals),
            ("f2", 5_000, 1)
        );
        assert_eq!(
            (member("f1"), member("f2")),
            (Some("a".into()), Some("a".into()))
        );
        // The agent lost f2 (a crash before storing it) and renews again with f1: f2 goes.
        store.renew_cert("a", "f1", "f3", 6_000, "ca").unwrap();
        assert_eq!(
            (member("f1"), member("f2"), member("f3")),
            (Some("a".into()), None, Some("a".into()))
        );
        // It connects with f3: f1 is retired.
        store.adopt_cert("a").unwrap();
        assert_eq!((member("f1"), member("f3")), (None, Some("a".into())));
        assert_eq!(store.node("a").unwrap().unwrap().previous_fingerprint, None);
        // Removing the node revokes every certificate it had.
        store.renew_cert("a", "f3", "f4", 7_000, "ca").unwrap();
        assert!(store.remove_node("a").unwrap());
        assert_eq!((member("f3"), member("f4")), (None, None));
        assert!(
            store
                .renew_cert("a", "f4", "f5", 8_000, "ca")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_plain_token_cannot_take_a_members_name_only_a_token_made_for_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put_token("h1", &token(100)).unwrap();
        store.put_token("h2", &token(100)).unwrap();
        store.put_token("h3", &token_for("b")).unwrap();
        assert_eq!(
            store.join("h1", 1, node("a", "real")).unwrap(),
            TokenCheck::Valid
        );
        assert_eq!(
            store.check_join("h2", "a", 1).unwrap(),
            TokenCheck::NameTaken
        );
        assert_eq!(
            store.join("h2", 1, node("a", "thief")).unwrap(),
            TokenCheck::NameTaken
        );
        assert_eq!(
            store.join("h3", 1, node("a", "thief")).unwrap(),
            TokenCheck::OtherNode("b".into())
        );
        // Nothing changed: the real node keeps its certificate, the tokens stay unused.
        assert_eq!(store.node_by_cert("real").unwrap().unwrap().name, "a");
        assert!(store.node_by_cert("thief").unwrap().is_none());
        assert!(
            store
                .tokens()
                .unwrap()
                .iter()
                .filter(|t| t.used_by.is_none())
                .count()
                == 2
        );
    }

    #[test]
    fn labels_and_cluster_come_from_the_token_and_stay_on_rejoin() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let mut t = token(100);
        t.grant.labels = Some(BTreeMap::from([("zone".into(), "shed".into())]));
        t.grant.cluster_id = Some("edge".into());
        store.put_token("h1", &t).unwrap();
        let mut proposing = node("a", "f1");
        proposing.labels = BTreeMap::from([("gpu".into(), "yes".into())]);
        store.join("h1", 1, proposing).unwrap();
        let a = store.node("a").unwrap().unwrap();
        assert_eq!(a.labels, BTreeMap::from([("zone".into(), "shed".into())]));
        assert_eq!(a.cluster_id.as_deref(), Some("edge"));
        store.put_token("h2", &token_for("a")).unwrap();
        store.join("h2", 1, node("a", "f2")).unwrap();
        let a = store.node("a").unwrap().unwrap();
        assert_eq!(a.labels, BTreeMap::from([("zone".into(), "shed".into())]));
        assert_eq!(a.cluster_id.as_deref(), Some("edge"));
    }

    #[test]
    fn a_revoked_token_admits_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put_token("abc1", &token(100)).unwrap();
        store.put_token("abd2", &token(100)).unwrap();
        assert_eq!(store.revoke_tokens("abc", 5).unwrap(), 1);
        assert_eq!(
            store.join("abc1", 6, node("a", "f")).unwrap(),
            TokenCheck::Revoked
        );
        assert_eq!(
            store.join("abd2", 6, node("a", "f")).unwrap(),
            TokenCheck::Valid
        );
        assert_eq!(
            store.revoke_tokens("abd", 7).unwrap(),
            0,
            "a used token stays used"
        );
    }

    #[test]
    fn rejoining_revokes_the_old_certificate_and_removing_revokes_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put_token("h1", &token(100)).unwrap();
        store.put_token("h2", &token_for("a")).unwrap();
        store.join("h1", 1, node("a", "old")).unwrap();
        store.join("h2", 1, node("a", "new")).unwrap();
        assert!(store.node_by_cert("old").unwrap().is_none());
        assert!(store.node_by_cert("new").unwrap().is_some());
        assert!(store.remove_node("a").unwrap());
        assert!(store.node_by_cert("new").unwrap().is_none());
    }
}

//! Who may join and what a node is: `spillway token create|list|revoke` and `spillway label
//! node`; who may call the API: `spillway api-token create|list|revoke`. Labels and cluster ids decide which functions (and secrets) a node receives, so they
//! come from the operator, never from the agent's own config.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::client::{Client, encode_path};
use spillway_api::tokens::{ApiTokenListing, TokenListing};
use spillway_api::{
    ApiTokenCreated, ApiTokenRequest, LabelChange, NodeView, TokenCreated, TokenRequest,
    TokenRevoke, TokensRevoked,
};

use super::output::{Format, print};

/// What `spillway token create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    pub ttl: Duration,
    pub description: String,
    /// The node name the token is for (required to join again under a taken name).
    pub node: Option<String>,
    pub labels: Vec<String>,
    pub cluster_id: Option<String>,
}

/// `k=v` pairs as a map; a pair without `=` is an error that shows the right form.
pub fn parse_labels(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("label `{p}` must be KEY=VALUE"))
        })
        .collect()
}

pub async fn create_token(client: &Client, new: NewToken, format: Format) -> anyhow::Result<()> {
    let labels = (!new.labels.is_empty())
        .then(|| parse_labels(&new.labels))
        .transpose()?;
    let created: TokenCreated = client
        .post(
            "/v1/tokens",
            &TokenRequest {
                ttl_secs: new.ttl.as_secs().max(1),
                description: new.description,
                count: None,
                node: new.node.clone(),
                labels,
                cluster_id: new.cluster_id,
            },
        )
        .await?;
    match format {
        Format::Table | Format::Wide | Format::Name => {
            println!("{}", created.token);
            let name = new
                .node
                .map(|n| format!(" (for node `{n}` only)"))
                .unwrap_or_default();
            eprintln!(
                "single use{name}, expires in {}. On the new node: spillway-agent join --coordinator HOST:{} --token {}",
                humantime::format_duration(new.ttl),
                created.coordinator.rsplit(':').next().unwrap_or("7443"),
                created.token
            );
        }
        f => print(f, &created, &[], Vec::new)?,
    }
    Ok(())
}

pub async fn list_tokens(client: &Client, format: Format) -> anyhow::Result<()> {
    let tokens: Vec<TokenListing> = client.get("/v1/tokens").await?;
    print(
        format,
        &tokens,
        &["ID", "DESCRIPTION", "NODE", "EXPIRES", "STATE"],
        || {
            tokens
                .iter()
                .map(|t| {
                    let r = &t.record;
                    let state = match (&r.used_by, r.revoked_at_ms) {
                        (Some(by), _) => format!("used by {by}"),
                        (None, Some(_)) => "revoked".into(),
                        (None, None) => "unused".into(),
                    };
                    vec![
                        t.id.clone(),
                        r.description.clone(),
                        r.grant.node.clone().unwrap_or_else(|| "(new)".into()),
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + Duration::from_millis(r.expires_at_ms),
                        )
                        .to_string(),
                        state,
                    ]
                })
                .collect()
        },
    )
}

pub async fn revoke_token(client: &Client, id: &str) -> anyhow::Result<()> {
    let done: TokensRevoked = client
        .post("/v1/tokens/revoke", &TokenRevoke { id: id.to_owned() })
        .await?;
    eprintln!("revoked {} token(s)", done.revoked);
    Ok(())
}

/// `spillway label node NAME k=v k2- [--cluster-id ID | --no-cluster-id] [--adopt-proposed]`.
pub async fn label_node(
    client: &Client,
    name: &str,
    changes: &[String],
    cluster_id: Option<String>,
    clear_cluster_id: bool,
    adopt_proposed: bool,
    format: Format,
) -> anyhow::Result<()> {
    let mut change = LabelChange {
        adopt_proposed,
        cluster_id,
        clear_cluster_id,
        ..LabelChange::default()
    };
    for c in changes {
        if let Some(key) = c.strip_suffix('-') {
            change.remove.push(key.to_owned());
        } else {
            change.set.extend(parse_labels(std::slice::from_ref(c))?);
        }
    }
    if change == LabelChange::default() {
        bail!(
            "nothing to change: give KEY=VALUE, KEY-, --cluster-id, --no-cluster-id or --adopt-proposed"
        );
    }
    let node: NodeView = client
        .put_json(&format!("/v1/nodes/{}/labels", encode_path(name)), &change)
        .await?;
    match format {
        Format::Table | Format::Wide | Format::Name => {
            println!(
                "node/{} labels: {}; cluster: {}",
                node.name,
                super::labels_cell(&node.labels),
                node.cluster_id.as_deref().unwrap_or("-")
            );
        }
        f => print(f, &node, &[], Vec::new)?,
    }
    Ok(())
}

/// `spillway api-token create --scope operator|invoker|webhook [--function F]…`.
pub async fn create_api_token(
    client: &Client,
    scope: String,
    functions: Vec<String>,
    description: String,
    format: Format,
) -> anyhow::Result<()> {
    let created: ApiTokenCreated = client
        .post(
            "/v1/api-tokens",
            &ApiTokenRequest {
                scope,
                functions,
                description,
            },
        )
        .await?;
    match format {
        Format::Table | Format::Wide | Format::Name => {
            println!("{}", created.token);
            eprintln!(
                "API token {} ({}): shown once, keep it; revoke it with `spillway api-token revoke {}`",
                created.id, created.scope, created.id
            );
        }
        f => print(f, &created, &[], Vec::new)?,
    }
    Ok(())
}

pub async fn list_api_tokens(client: &Client, format: Format) -> anyhow::Result<()> {
    let tokens: Vec<ApiTokenListing> = client.get("/v1/api-tokens").await?;
    print(
        format,
        &tokens,
        &["ID", "SCOPE", "DESCRIPTION", "STATE"],
        || {
            tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.record.scope.describe(),
                        t.record.description.clone(),
                        if t.record.revoked_at_ms.is_some() {
                            "revoked".into()
                        } else {
                            "live".into()
                        },
                    ]
                })
                .collect()
        },
    )
}

pub async fn revoke_api_token(client: &Client, id: &str) -> anyhow::Result<()> {
    let done: TokensRevoked = client
        .post("/v1/api-tokens/revoke", &TokenRevoke { id: id.to_owned() })
        .await?;
    eprintln!("revoked {} API token(s)", done.revoked);
    Ok(())
}

/// `spillway mqtt user add NAME --publish F --subscribe F`: prints the password once.
pub async fn add_mqtt_user(
    client: &Client,
    req: spillway_api::MqttUserRequest,
    format: Format,
) -> anyhow::Result<()> {
    let created: spillway_api::MqttUserCreated = client.post("/v1/mqtt/users", &req).await?;
    match format {
        Format::Table | Format::Wide | Format::Name => {
            println!("{}", created.password);
            eprintln!(
                "MQTT user {}: password shown once, keep it (mosquitto_pub -u {} -P PASSWORD …); remove it with `spillway mqtt user remove {}`",
                created.name, created.name, created.name
            );
        }
        f => print(f, &created, &[], Vec::new)?,
    }
    Ok(())
}

pub async fn list_mqtt_users(client: &Client, format: Format) -> anyhow::Result<()> {
    let users: Vec<spillway_api::tokens::MqttUserRecord> = client.get("/v1/mqtt/users").await?;
    print(
        format,
        &users,
        &["NAME", "PUBLISH", "SUBSCRIBE", "DESCRIPTION"],
        || {
            users
                .iter()
                .map(|u| {
                    vec![
                        u.name.clone(),
                        u.publish.join(" "),
                        u.subscribe.join(" "),
                        u.description.clone(),
                    ]
                })
                .collect()
        },
    )
}

pub async fn remove_mqtt_user(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .delete(&format!(
            "/v1/mqtt/users/{}",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        ))
        .await?;
    eprintln!("removed MQTT user {name}");
    Ok(())
}
